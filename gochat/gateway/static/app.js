// gochat's web page: the login form and the chat view, drawn from the state in client.js.
//
// Every piece of text that comes from a user or the server goes into the page through
// textContent or an attribute and is never parsed as markup, so a message is always
// shown as the characters it holds.

import { ApiError, ChatClient, MAX_BODY_CHARS, codePoints, describeMember, login, register } from "./client.js";

const SESSION_KEY = "gochat.v1.session";
const API_BASE = new URL("api/", document.baseURI);

/** The WebSocket URL of the gateway that served this page: ws:// beside http://, wss:// beside https://. */
function webSocketUrl() {
  const url = new URL("ws", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  return url.href;
}

const $ = (id) => document.getElementById(id);

/** Create an element with a class and, optionally, text (always as textContent). */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

// Session (per tab, so two tabs can be two users).

function savedSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    if (session && typeof session.token === "string" && Number.isInteger(session.userId)) return session;
  } catch {
    // Unreadable: log in again.
  }
  return null;
}

function saveSession(session) {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  } catch {
    // Storage disabled: the session lasts as long as the page.
  }
}

function storageOrNull(name) {
  try {
    const storage = window[name];
    storage.getItem("gochat.v1.probe");
    return storage;
  } catch {
    return null;
  }
}

// The login view.

let client = null;

function showLogin(message = "") {
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  document.title = "gochat";
  $("login-error").textContent = message;
  $("username").focus();
}

async function submitCredentials(registerFirst) {
  const form = $("login-form");
  const username = $("username").value;
  const password = $("password").value;
  const error = $("login-error");
  error.textContent = "";
  if (!form.reportValidity()) return;
  for (const button of form.querySelectorAll("button")) button.disabled = true;
  try {
    if (registerFirst) await register(API_BASE, username, password);
    const reply = await login(API_BASE, username, password);
    const session = {
      token: reply.token,
      userId: reply.user_id,
      username: username.trim().toLowerCase(),
      expiresAt: reply.expires_at,
    };
    saveSession(session);
    $("password").value = "";
    startChat(session);
  } catch (e) {
    error.textContent = e instanceof ApiError ? e.message : String(e);
  } finally {
    for (const button of form.querySelectorAll("button")) button.disabled = false;
  }
}

// The chat view.

function startChat(session) {
  client = new ChatClient(session, {
    url: webSocketUrl(),
    storage: storageOrNull("localStorage"),
    tabStorage: storageOrNull("sessionStorage"),
  });
  client.setVisible(document.visibilityState === "visible");
  client.addEventListener("change", renderSoon);
  client.addEventListener("loggedout", (event) => logOut(event.detail.message, false));
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").textContent = session.username;
  const first = mostRecent();
  if (first !== null) client.select(first.key);
  client.start();
  render();
  $("new-chat-name").focus();
}

function logOut(message = "", forget = true) {
  if (client !== null) {
    client.stop();
    if (forget) client.forgetStored();
    client = null;
  }
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // Nothing stored.
  }
  showLogin(message);
}

function sortedConversations() {
  return [...client.conversations.values()].sort((a, b) => b.lastActivity - a.lastActivity || (a.key < b.key ? -1 : 1));
}

function mostRecent() {
  return sortedConversations()[0] ?? null;
}

let renderScheduled = false;

function renderSoon() {
  if (!renderScheduled) {
    renderScheduled = true;
    requestAnimationFrame(() => {
      renderScheduled = false;
      render();
    });
  }
}

function render() {
  if (client === null) return;
  renderStatus();
  renderConversations();
  renderConversation();
  const unread = [...client.conversations.values()].reduce((n, conv) => n + conv.unread, 0);
  document.title = unread > 0 ? `(${unread}) gochat` : "gochat";
}

function renderStatus() {
  const { state, retryAt, detail } = client.status;
  const status = $("status");
  status.dataset.state = state;
  let text;
  if (state === "online") text = "Online";
  else if (state === "connecting") text = "Connecting…";
  else if (state === "waiting" && retryAt !== null) {
    text = `Reconnecting in ${Math.max(0, Math.ceil((retryAt - Date.now()) / 1000))} s`;
  } else text = "Offline";
  status.textContent = text;
  status.title = detail;
  $("reconnect-now").hidden = state !== "waiting";
}

/**
 * Make `container`'s children match `items`, reusing the element of each key while its
 * version is the same: the list does not flicker, and a button keeps its focus.
 */
function reconcile(container, items, keyOf, versionOf, build) {
  const existing = new Map();
  for (const child of container.children) existing.set(child.dataset.key, child);
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    const version = versionOf(item);
    let node = existing.get(key);
    if (node === undefined || node.dataset.version !== version) {
      const fresh = build(item);
      fresh.dataset.key = key;
      fresh.dataset.version = version;
      if (node !== undefined) node.replaceWith(fresh);
      node = fresh;
    }
    existing.delete(key);
    const expectedPosition = previous === null ? container.firstElementChild : previous.nextElementSibling;
    if (expectedPosition !== node) container.insertBefore(node, expectedPosition);
    previous = node;
  }
  for (const stale of existing.values()) stale.remove();
}

function renderConversations() {
  const list = $("conversations");
  const conversations = sortedConversations();
  $("no-conversations").hidden = conversations.length > 0;
  reconcile(
    list,
    conversations,
    (conv) => conv.key,
    (conv) =>
      JSON.stringify([
        client.title(conv),
        client.presenceOf(conv),
        conv.unread,
        conv.lastSeq,
        conv.bySeq.size,
        client.pendingIn(conv).length,
        conv.key === client.selected,
      ]),
    buildConversationItem,
  );
}

function previewOf(message) {
  if (message.kind === "member") return describeMember(message);
  if (message.recalled) return "(message withdrawn)";
  return message.body;
}

function buildConversationItem(conv) {
  const item = el("li");
  const button = el("button", "conv");
  button.type = "button";
  button.dataset.conv = conv.key;
  if (conv.peer !== null) button.dataset.peer = conv.peer;
  if (conv.key === client.selected) button.setAttribute("aria-current", "true");
  const presence = client.presenceOf(conv);
  const dot = el("span", "presence-dot");
  dot.dataset.presence = presence;
  dot.title = presence;
  const title = el("span", "conv-title", client.title(conv));
  const last = conv.lastShown;
  const pending = client.pendingIn(conv);
  const previewText =
    pending.length > 0 ? pending[pending.length - 1].body : last !== null ? previewOf(last) : "New conversation";
  const preview = el("span", "conv-preview", previewText);
  button.append(dot, title);
  if (conv.unread > 0) {
    const badge = el("span", "unread", String(conv.unread));
    badge.setAttribute("aria-label", `${conv.unread} unread`);
    button.append(badge);
  }
  button.append(preview);
  button.addEventListener("click", () => {
    client.select(conv.key);
    $("message-input").focus();
  });
  item.append(button);
  return item;
}

let shownConversation = null;

function renderConversation() {
  const conv = client.selected === null ? null : client.conversations.get(client.selected) ?? null;
  const messages = $("messages");
  const switched = shownConversation !== (conv?.key ?? null);
  shownConversation = conv?.key ?? null;
  const atBottom = messages.scrollTop + messages.clientHeight >= messages.scrollHeight - 40;

  $("conv-empty").hidden = conv !== null;
  $("conversation-pane").dataset.conv = conv?.key ?? "";
  if (conv === null) {
    $("conv-title").textContent = "";
    $("conv-presence").textContent = "";
    messages.replaceChildren();
    setComposer(false, "");
    return;
  }
  $("conv-title").textContent = client.title(conv);
  const presence = client.presenceOf(conv);
  const presenceLabel = $("conv-presence");
  presenceLabel.dataset.presence = presence;
  presenceLabel.textContent = presence === "unknown" ? "" : presence;

  const items = [
    ...conv.shown.map((m) => ({ kind: "message", m })),
    ...client.pendingIn(conv).map((entry) => ({ kind: "pending", entry })),
  ];
  reconcile(
    messages,
    items,
    // Keyed by conversation too: another conversation's seq 1 is another message.
    (item) => (item.kind === "message" ? `${conv.key} ${item.m.seq}` : `pending ${item.entry.clientMsgId}`),
    (item) =>
      item.kind === "message"
        ? JSON.stringify([item.m.body, item.m.edited, item.m.recalled])
        : `${item.entry.state}:${client.status.state}:${item.entry.error ?? ""}`,
    buildMessageItem,
  );
  if (switched || atBottom) messages.scrollTop = messages.scrollHeight;

  const target = client.sendTarget(conv);
  setComposer(target !== null, target === null ? "This client cannot write to this conversation yet." : "");
}

function setComposer(enabled, note) {
  $("message-input").disabled = !enabled;
  $("send-button").disabled = !enabled;
  $("composer-note").textContent = note;
}

function buildMessageItem(item) {
  const own = item.kind === "pending" || item.m.from === client.me.name;
  const li = el("li", `message ${own ? "own" : "theirs"}`);
  const meta = el("div", "meta");
  const body = el("div", "body");
  const delivery = el("div", "delivery");
  if (item.kind === "message" && item.m.kind === "member") {
    const note = el("li", "note", describeMember(item.m));
    note.dataset.seq = String(item.m.seq);
    return note;
  }
  if (item.kind === "message") {
    const { m } = item;
    li.dataset.state = "acked";
    li.dataset.seq = String(m.seq);
    li.dataset.from = m.from;
    meta.append(el("span", "from", m.from));
    if (m.ts) {
      const time = el("time", "", timeFormat.format(new Date(m.ts)));
      time.dateTime = new Date(m.ts).toISOString();
      time.title = dateTimeFormat.format(new Date(m.ts));
      meta.append(time);
    }
    body.textContent = m.recalled ? "(message withdrawn)" : m.body;
    if (m.recalled) li.classList.add("recalled");
    if (m.edited) meta.append(el("span", "edited", "edited"));
    if (own) {
      delivery.textContent = `✓ stored · seq ${m.seq}`;
      delivery.title = `message id ${m.msgId}`;
    } else {
      delivery.textContent = `seq ${m.seq}`;
    }
  } else {
    const { entry } = item;
    li.dataset.state = entry.state;
    li.dataset.clientMsgId = entry.clientMsgId;
    li.dataset.from = client.me.name;
    meta.append(el("span", "from", client.me.name));
    body.textContent = entry.body;
    if (entry.state === "failed") {
      delivery.append(el("span", "", `Not sent: ${entry.error}`));
      const retry = el("button", "link", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => client.retry(entry.clientMsgId));
      const discard = el("button", "link", "Discard");
      discard.type = "button";
      discard.addEventListener("click", () => client.discard(entry.clientMsgId));
      delivery.append(retry, discard);
    } else {
      delivery.textContent = client.status.state === "online" ? "Sending…" : "Waiting for the connection…";
    }
  }
  li.append(meta, body, delivery);
  return li;
}

function sendComposed() {
  const conv = client?.conversations.get(client.selected);
  const input = $("message-input");
  if (!conv) return;
  try {
    client.send(conv, input.value);
    input.value = "";
    updateCounter();
  } catch (e) {
    $("composer-note").textContent = e instanceof RangeError ? e.message : String(e);
  }
  input.focus();
}

function updateCounter() {
  const n = codePoints($("message-input").value);
  const counter = $("char-count");
  counter.hidden = n < MAX_BODY_CHARS * 0.8;
  counter.textContent = `${n} / ${MAX_BODY_CHARS}`;
  counter.classList.toggle("over", n > MAX_BODY_CHARS);
}

// Wiring.

function init() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submitCredentials(false);
  });
  $("register-button").addEventListener("click", () => submitCredentials(true));
  $("logout").addEventListener("click", () => logOut());
  $("reconnect-now").addEventListener("click", () => client?.reconnectNow());
  $("new-chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("new-chat-name");
    const name = input.value.trim();
    if (client === null || name === "") return;
    client.openDirect(name);
    input.value = "";
    $("message-input").focus();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendComposed();
  });
  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendComposed();
    }
  });
  $("message-input").addEventListener("input", updateCounter);
  document.addEventListener("visibilitychange", () => client?.setVisible(document.visibilityState === "visible"));
  window.addEventListener("online", () => client?.reconnectNow());
  // The reconnect countdown.
  setInterval(() => {
    if (client?.status.state === "waiting") renderStatus();
  }, 1000);

  const session = savedSession();
  if (session !== null && !(session.expiresAt && session.expiresAt * 1000 <= Date.now())) startChat(session);
  else showLogin(session !== null ? "Your session has expired. Log in again." : "");
}

init();
