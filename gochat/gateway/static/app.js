// gochat's web page: the login form and the chat view, drawn from the state in client.js.
//
// Every piece of text that comes from a user or the server goes into the page through
// textContent or an attribute and is never parsed as markup, so a message is always
// shown as the characters it holds.

import {
  ApiError,
  ChatClient,
  MAX_BODY_CHARS,
  codePoints,
  describeMember,
  login,
  register,
  splitNames,
} from "./client.js";

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

function pageVisible() {
  return document.visibilityState === "visible" && document.hasFocus();
}

function startChat(session) {
  client = new ChatClient(session, {
    url: webSocketUrl(),
    storage: storageOrNull("localStorage"),
    tabStorage: storageOrNull("sessionStorage"),
  });
  client.setVisible(pageVisible());
  client.addEventListener("change", renderSoon);
  client.addEventListener("loggedout", (event) => logOut(event.detail.message, false));
  client.addEventListener("notice", (event) => showToast(event.detail.message));
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
  editing = null;
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

function selectedConversation() {
  return client === null || client.selected === null ? null : (client.conversations.get(client.selected) ?? null);
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
  const unread = [...client.conversations.values()].reduce((n, conv) => n + client.unreadOf(conv), 0);
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

/** "bob is typing…", "bob and carol are typing…", or "". */
function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return "Several people are typing…";
}

function previewOf(conv, message) {
  let text;
  if (message.kind === "member") return describeMember(message);
  if (message.recalled) text = "(message withdrawn)";
  else text = message.body;
  if (conv.kind === "group") return `${message.from === client.me.name ? "You" : message.from}: ${text}`;
  return text;
}

/** What one entry of the conversation list shows. */
function conversationView(conv) {
  const last = conv.lastShown;
  const pending = client.pendingIn(conv);
  const typing = client.typingIn(conv);
  let preview;
  if (typing.length > 0) preview = typingText(typing);
  else if (pending.length > 0) preview = pending[pending.length - 1].body;
  else if (last !== null) preview = previewOf(conv, last);
  else preview = conv.kind === "group" ? "New group" : "New conversation";
  return {
    conv,
    title: client.title(conv),
    presence: conv.kind === "group" ? "group" : client.presenceOf(conv),
    unread: client.unreadOf(conv),
    preview,
    typing: typing.length > 0,
    left: conv.left,
    selected: conv.key === client.selected,
  };
}

function renderConversations() {
  const list = $("conversations");
  const views = sortedConversations().map(conversationView);
  $("no-conversations").hidden = views.length > 0;
  reconcile(
    list,
    views,
    (view) => view.conv.key,
    (view) => JSON.stringify({ ...view, conv: view.conv.key }),
    buildConversationItem,
  );
}

function buildConversationItem(view) {
  const { conv } = view;
  const item = el("li");
  const button = el("button", "conv");
  button.type = "button";
  button.dataset.conv = conv.key;
  if (conv.peer !== null) button.dataset.peer = conv.peer;
  if (view.selected) button.setAttribute("aria-current", "true");
  let marker;
  if (conv.kind === "group") {
    marker = el("span", "group-mark", Array.from(view.title)[0]?.toUpperCase() ?? "#");
    marker.setAttribute("aria-hidden", "true");
    button.dataset.group = String(conv.groupId);
    if (view.left) button.classList.add("left");
  } else {
    marker = el("span", "presence-dot");
    marker.dataset.presence = view.presence;
    marker.title = view.presence;
  }
  button.append(marker, el("span", "conv-title", view.title));
  if (view.unread > 0) {
    const badge = el("span", "unread", String(view.unread));
    badge.setAttribute("aria-label", `${view.unread} unread`);
    button.append(badge);
  }
  button.append(el("span", view.typing ? "conv-preview typing" : "conv-preview", view.preview));
  button.addEventListener("click", () => {
    client.select(conv.key);
    $("message-input").focus();
  });
  item.append(button);
  return item;
}

let shownConversation = null;

/** The first message element at least partly in view, and where it is, to keep it still while older ones load. */
function scrollAnchor(list) {
  for (const child of list.children) {
    if (!child.classList.contains("earlier") && child.offsetTop + child.offsetHeight > list.scrollTop) {
      return { key: child.dataset.key, offset: child.offsetTop - list.scrollTop };
    }
  }
  return null;
}

function renderConversation() {
  const conv = selectedConversation();
  const messages = $("messages");
  const switched = shownConversation !== (conv?.key ?? null);
  if (switched) {
    cancelEditing();
    resetGroupActions();
  }
  shownConversation = conv?.key ?? null;
  const atBottom = messages.scrollTop + messages.clientHeight >= messages.scrollHeight - 40;
  const anchor = switched || atBottom ? null : scrollAnchor(messages);

  $("conv-empty").hidden = conv !== null;
  $("conversation-pane").dataset.conv = conv?.key ?? "";
  if (conv === null) {
    $("conv-title").textContent = "";
    $("conv-presence").textContent = "";
    $("group-actions").hidden = true;
    $("typing").textContent = "";
    messages.replaceChildren();
    setComposer(false, "");
    return;
  }
  $("conv-title").textContent = client.title(conv);
  renderHeader(conv);
  $("typing").textContent = typingText(client.typingIn(conv));

  const items = [];
  if (client.canLoadEarlier(conv)) items.push({ kind: "earlier" });
  for (const m of conv.shown) items.push({ kind: "message", m });
  for (const entry of client.pendingIn(conv)) items.push({ kind: "pending", entry });
  reconcile(
    messages,
    items,
    // Keyed by conversation too: another conversation's seq 1 is another message.
    (item) => {
      if (item.kind === "earlier") return `earlier ${conv.key}`;
      return item.kind === "message" ? `${conv.key} ${item.m.seq}` : `pending ${item.entry.clientMsgId}`;
    },
    (item) => {
      if (item.kind === "earlier") return `${conv.loadingEarlier}:${client.status.state}`;
      if (item.kind === "pending") return `${item.entry.state}:${client.status.state}:${item.entry.error ?? ""}`;
      const { m } = item;
      const change = client.changePending(conv, m.seq);
      const editingThis = editing !== null && editing.conv === conv.key && editing.seq === m.seq;
      const read = m.from === client.me.name ? client.readBy(conv, m) : null;
      return JSON.stringify([m.body, m.edited, m.recalled, read, change?.change.kind ?? null, editingThis]);
    },
    (item) => buildMessageItem(conv, item),
  );
  if (switched || atBottom) messages.scrollTop = messages.scrollHeight;
  else if (anchor !== null) {
    const node = [...messages.children].find((child) => child.dataset.key === anchor.key);
    if (node) messages.scrollTop = node.offsetTop - anchor.offset;
  }

  if (conv.kind === "group" && conv.left) setComposer(false, "You are no longer a member of this group.");
  else {
    const target = client.sendTarget(conv);
    setComposer(target !== null, target === null ? "This client cannot write to this conversation." : "");
  }
  $("edit-banner").hidden = editing === null;
  $("send-button").textContent = editing === null ? "Send" : "Save";
}

function renderHeader(conv) {
  const presenceLabel = $("conv-presence");
  const actions = $("group-actions");
  if (conv.kind !== "group") {
    const presence = client.presenceOf(conv);
    presenceLabel.dataset.presence = presence;
    presenceLabel.textContent = presence === "unknown" ? "" : presence;
    presenceLabel.title = "";
    actions.hidden = true;
    return;
  }
  presenceLabel.dataset.presence = "group";
  if (conv.left) presenceLabel.textContent = "You left this group";
  else if (conv.memberCount !== null) {
    const count = `${conv.memberCount} member${conv.memberCount === 1 ? "" : "s"}`;
    presenceLabel.textContent = conv.members !== null ? `${count}: ${conv.members.join(", ")}` : count;
  } else presenceLabel.textContent = "";
  presenceLabel.title = conv.role !== null && !conv.left ? `You are ${conv.role === "owner" ? "the owner" : `a ${conv.role}`}` : "";
  actions.hidden = conv.left;
  const canAdd = conv.role === "owner" || conv.role === "admin";
  $("add-member-toggle").hidden = !canAdd || !$("add-member-form").hidden;
  if (!canAdd) $("add-member-form").hidden = true;
}

function setComposer(enabled, note) {
  $("message-input").disabled = !enabled;
  $("send-button").disabled = !enabled;
  $("composer-note").textContent = note;
}

function timeElement(ts) {
  const time = el("time", "", timeFormat.format(new Date(ts)));
  time.dateTime = new Date(ts).toISOString();
  time.title = dateTimeFormat.format(new Date(ts));
  return time;
}

function actionButton(label, action, onClick) {
  const button = el("button", "link msg-action", label);
  button.type = "button";
  button.dataset.action = action;
  button.addEventListener("click", onClick);
  return button;
}

function buildMessageItem(conv, item) {
  if (item.kind === "earlier") {
    const li = el("li", "earlier");
    const button = el("button", "secondary small", conv.loadingEarlier ? "Loading…" : "Load earlier messages");
    button.type = "button";
    button.id = "load-earlier";
    button.disabled = conv.loadingEarlier || client.status.state !== "online";
    button.addEventListener("click", () => client.loadEarlier(conv));
    li.append(button);
    return li;
  }
  if (item.kind === "message" && item.m.kind === "member") {
    const note = el("li", "note", describeMember(item.m));
    note.dataset.seq = String(item.m.seq);
    return note;
  }
  const own = item.kind === "pending" || item.m.from === client.me.name;
  const li = el("li", `message ${own ? "own" : "theirs"}`);
  const meta = el("div", "meta");
  const body = el("div", "body");
  const delivery = el("div", "delivery");
  if (item.kind === "message") {
    const { m } = item;
    li.dataset.state = "acked";
    li.dataset.seq = String(m.seq);
    li.dataset.from = m.from;
    meta.append(el("span", "from", m.from));
    if (m.ts) meta.append(timeElement(m.ts));
    body.textContent = m.recalled ? "(message withdrawn)" : m.body;
    if (m.recalled) li.classList.add("recalled");
    if (m.edited) meta.append(el("span", "edited", "edited"));
    if (editing !== null && editing.conv === conv.key && editing.seq === m.seq) li.classList.add("editing");
    if (own) {
      const stored = el("span", "stored", `✓ stored · seq ${m.seq}`);
      stored.title = `message id ${m.msgId}`;
      delivery.append(stored);
      const read = client.readBy(conv, m);
      if (read === true || read > 0) {
        const receipt = el("span", "receipt", conv.kind === "group" ? `read by ${read}` : "read");
        receipt.dataset.read = String(read);
        delivery.append(receipt);
      }
      const change = client.changePending(conv, m.seq);
      if (change !== null) {
        delivery.append(el("span", "change-state", change.change.kind === "edit" ? "saving edit…" : "recalling…"));
      } else if (!m.recalled) {
        const actions = el("span", "msg-actions");
        actions.append(
          actionButton("Edit", "edit", () => startEditing(conv, m)),
          actionButton("Recall", "recall", () => client.recall(conv, m.seq)),
        );
        delivery.append(actions);
      }
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

// Editing one's own message: the composer holds its text until Enter saves or Esc cancels.

let editing = null; // {conv, seq, original, draft}

function startEditing(conv, m) {
  const input = $("message-input");
  if (editing === null) editing = { draft: input.value };
  editing = { ...editing, conv: conv.key, seq: m.seq, original: m.body };
  input.value = m.body;
  updateCounter();
  render();
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

function cancelEditing() {
  if (editing === null) return;
  $("message-input").value = editing.draft;
  editing = null;
  updateCounter();
  if (client !== null) renderSoon();
}

function sendComposed() {
  const conv = selectedConversation();
  const input = $("message-input");
  if (!conv) return;
  try {
    if (editing !== null && editing.conv === conv.key) {
      if (input.value !== editing.original) client.edit(conv, editing.seq, input.value);
      cancelEditing();
    } else {
      client.send(conv, input.value);
      input.value = "";
    }
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

// A refusal, shown for a few seconds.

let toastTimer = null;

function showToast(message) {
  const toast = $("toast");
  toast.textContent = message;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toast.hidden = true;
  }, 5_000);
}

// Groups: create from the sidebar, add and leave from the header.

function toggleNewGroup(open) {
  const form = $("new-group-form");
  form.hidden = !open;
  $("new-group-toggle").setAttribute("aria-expanded", String(open));
  $("group-error").textContent = "";
  if (open) $("group-name").focus();
}

async function createGroup() {
  const form = $("new-group-form");
  const name = $("group-name").value.trim();
  const error = $("group-error");
  error.textContent = "";
  if (name === "") {
    error.textContent = "Give the group a name.";
    return;
  }
  for (const button of form.querySelectorAll("button")) button.disabled = true;
  try {
    const conv = await client.createGroup(name, splitNames($("group-members").value));
    form.reset();
    toggleNewGroup(false);
    client?.select(conv.key);
    $("message-input").focus();
  } catch (e) {
    error.textContent = e instanceof ApiError ? e.message : String(e);
  } finally {
    for (const button of form.querySelectorAll("button")) button.disabled = false;
  }
}

function resetGroupActions() {
  $("add-member-form").hidden = true;
  $("add-member-form").reset();
  const leave = $("leave-group");
  leave.textContent = "Leave";
  delete leave.dataset.confirm;
}

async function addMember() {
  const conv = selectedConversation();
  const names = splitNames($("add-member-name").value);
  if (conv?.kind !== "group" || names.length === 0) return;
  try {
    const added = await client.addMembers(conv, names);
    if (added.length === 0) showToast(`Already in the group: ${names.join(", ")}.`);
    resetGroupActions();
    renderSoon();
  } catch (e) {
    showToast(e instanceof ApiError ? e.message : String(e));
  }
}

let leaveTimer = null;

async function leaveGroup() {
  const conv = selectedConversation();
  const leave = $("leave-group");
  if (conv?.kind !== "group") return;
  if (leave.dataset.confirm !== "1") {
    // Ask once more, in place: a second click within a few seconds leaves.
    leave.dataset.confirm = "1";
    leave.textContent = "Really leave?";
    clearTimeout(leaveTimer);
    leaveTimer = setTimeout(resetGroupActions, 4_000);
    return;
  }
  clearTimeout(leaveTimer);
  resetGroupActions();
  try {
    await client.leaveGroup(conv);
  } catch (e) {
    showToast(e instanceof ApiError ? e.message : String(e));
  }
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
  $("new-group-toggle").addEventListener("click", () => toggleNewGroup($("new-group-form").hidden));
  $("cancel-group-button").addEventListener("click", () => toggleNewGroup(false));
  $("new-group-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (client !== null) createGroup();
  });
  $("add-member-toggle").addEventListener("click", () => {
    $("add-member-form").hidden = false;
    $("add-member-toggle").hidden = true;
    $("add-member-name").focus();
  });
  $("add-member-cancel").addEventListener("click", () => {
    resetGroupActions();
    renderSoon();
  });
  $("add-member-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (client !== null) addMember();
  });
  $("leave-group").addEventListener("click", () => {
    if (client !== null) leaveGroup();
  });
  $("edit-cancel").addEventListener("click", () => {
    cancelEditing();
    $("message-input").focus();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendComposed();
  });
  const input = $("message-input");
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendComposed();
    } else if (event.key === "Escape" && editing !== null) {
      event.preventDefault();
      cancelEditing();
    }
  });
  input.addEventListener("input", () => {
    updateCounter();
    const conv = selectedConversation();
    if (conv !== null && editing === null && input.value.trim() !== "") client.typed(conv);
  });
  $("messages").addEventListener("scroll", () => {
    const conv = selectedConversation();
    if (conv !== null && $("messages").scrollTop < 60) client.loadEarlier(conv);
  });
  const visibility = () => client?.setVisible(pageVisible());
  document.addEventListener("visibilitychange", visibility);
  window.addEventListener("focus", visibility);
  window.addEventListener("blur", visibility);
  window.addEventListener("online", () => client?.reconnectNow());
  window.addEventListener("pagehide", () => client?.flush());
  // The reconnect countdown.
  setInterval(() => {
    if (client?.status.state === "waiting") renderStatus();
  }, 1000);

  const session = savedSession();
  if (session !== null && !(session.expiresAt && session.expiresAt * 1000 <= Date.now())) startChat(session);
  else showLogin(session !== null ? "Your session has expired. Log in again." : "");
}

init();
