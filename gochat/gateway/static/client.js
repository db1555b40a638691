// gochat's protocol client: the web page's state and its one WebSocket, with no DOM.
//
// It speaks version 1 of docs/protocol.md and nothing else. Out: auth, ping, send (to a
// user or into a conversation), edit, recall, sync, recv_ack, read, typing, history,
// presence, conversations, groups, group_create, group_add, group_leave, group_members.
// In: their replies, push, typing, receipt, presence and error. The page (app.js) renders what
// this module holds and calls its methods; every change is announced with a "change"
// event, and a refusal the page should show for a moment with a "notice" event.
//
// Conversations are kept by the `conv` key the server gives ("d:1:2" for a direct
// chat, "g:7" for a group). A chat the user starts by name has no key until the server
// acks its first message, so it lives as a draft ("new:bob") until then.
//
// Delivery: every message, edit and recall gets a random client_msg_id and waits in the
// outbox until its ack (stored, with a seq). Without an ack it is sent again with the
// same id (on a timeout, after an error that says "retry", after a reconnect); the
// server stores it once. Only an error that retrying cannot fix marks a message
// "failed" (an edit or recall is dropped, and the page is told why).
//
// Resume: after every (re)connect the client sends auth, then sync with `since` set
// to the last gap-free seq it has of each conversation, then recv_ack for what it
// stored; then it asks for its groups and the conversation list (titles, unread
// counts). A push that skips a seq triggers a sync of that conversation. Reconnects
// back off exponentially with jitter.
//
// Reading: the conversation the page shows, while the window is visible and focused,
// is marked read (`read`) up to its newest gap-free seq. Unread counts are the other
// people's text messages after the read position, as the server counts them. Opening a
// conversation asks for its newest page of `history` once per connection, which fills
// in what this browser never had and says how far each member has read; older pages
// come on request (`history` with `before`).

export const PROTOCOL_VERSION = 1;
export const MAX_BODY_CHARS = 8192;

const ACK_TIMEOUT_MS = 10_000; // resend a send that has no reply after this long...
const MAX_ACK_TIMEOUT_MS = 60_000; // ...doubling each time, up to this
const CONNECT_TIMEOUT_MS = 15_000; // from opening the socket to auth_ok
const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 30_000;
const PRESENCE_EVERY_MS = 15_000;
const RECV_ACK_DELAY_MS = 150; // gather the acks of a burst of pushes into one frame per conversation
const READ_DELAY_MS = 250; // likewise for read positions
const GAP_GRACE_MS = 1_500; // a missing seq may still arrive (our own ack, a push in flight) before we sync
const TYPING_EVERY_MS = 2_000; // send `typing` at most this often per conversation
const TYPING_MIN_GAP_MS = 1_100; // the server refuses a second `typing` within 1 s
const TYPING_SHOWN_MS = 4_000; // show "X is typing" this long after their `typing` frame
const HISTORY_PAGE = 50;
const KEEP_MESSAGES = 500; // per conversation, in memory (plus the pages the user asked for)
const STORE_MESSAGES = 200; // per conversation, in localStorage
const MAX_PRESENCE_NAMES = 500;

// Error codes after which the same send may succeed later (docs/protocol.md, section 7).
const RETRYABLE = new Set(["unavailable", "rate_limited", "internal", "shutting_down", "not_authenticated"]);
// Close codes after which only a new login helps.
const LOGIN_AGAIN = new Map([
  [4401, "The server did not accept your session. Log in again."],
  [4402, "Your session has expired. Log in again."],
]);

/** An HTTP API error, or a refused request: `code` is the stable error code, `message` is for people. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function postCredentials(url, username, password) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && typeof body === "object" ? body.error : null;
    throw new ApiError(
      response.status,
      error && typeof error.code === "string" ? error.code : `http_${response.status}`,
      error && typeof error.message === "string" ? error.message : `The server answered HTTP ${response.status}.`,
    );
  }
  return body;
}

/** POST /api/register; resolves to {user_id}. */
export function register(apiBase, username, password) {
  return postCredentials(new URL("register", apiBase), username, password);
}

/** POST /api/login; resolves to {user_id, token, expires_at}. */
export function login(apiBase, username, password) {
  return postCredentials(new URL("login", apiBase), username, password);
}

/** A random UUID (v4) from crypto.getRandomValues, which, unlike crypto.randomUUID, plain-http pages have too. */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Characters as the server counts them (Unicode code points, not UTF-16 units). */
export function codePoints(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/** Usernames are case-insensitive and trimmed by the server; compare them the same way. */
export function normaliseName(name) {
  return String(name).trim().toLowerCase();
}

/** Names typed by a person ("bob, carol dave"): normalised, each once, in order. */
export function splitNames(text) {
  const names = String(text)
    .split(/[\s,;]+/)
    .map(normaliseName)
    .filter((name) => name !== "");
  return [...new Set(names)];
}

/**
 * "direct" for "d:<id>:<id>", "group" for "g:<id>", "draft" for a chat not yet acked,
 * "other" for any key this client has no rules for.
 */
export function conversationKind(key) {
  if (key.startsWith("d:")) return "direct";
  if (key.startsWith("g:")) return "group";
  if (key.startsWith("new:")) return "draft";
  return "other";
}

/** Jittered exponential backoff: attempt 0, 1, 2... wait about 0.5 s, 1 s, 2 s... up to 30 s, each time 50-100%. */
export function reconnectDelay(attempt, random = Math.random) {
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** What a refused request means, for people (the server's message says the rest). */
export function describeRefusal(code, message) {
  switch (code) {
    case "too_late":
      return "Too late: the time to change that message has passed.";
    case "forbidden":
      return `Not allowed: ${message}`;
    case "not_member":
      return "You are not a member of that conversation.";
    case "unknown_user":
      return `No such user: ${message}`;
    case "unknown_message":
      return "That message does not exist.";
    case "group_full":
      return `The group is full: ${message}`;
    default:
      return message;
  }
}

function maxOf(a, b) {
  return a === null || a === undefined ? b : Math.max(a, b);
}

/** One conversation: its messages by seq, how far it is complete, read and known. */
export class Conversation {
  constructor(key) {
    this.key = key;
    this.kind = conversationKind(key);
    this.peer = null; // the other user's name, for a direct chat, once known
    this.title = null; // a group's name, once known
    this.groupId = this.kind === "group" ? Number(key.slice(2)) : null;
    this.role = null; // the user's role in a group: "owner", "admin" or "member"
    this.memberCount = null;
    this.members = null; // the group's member names, once asked for
    this.left = false; // no longer a member of this group
    this.membershipSeq = 0; // the seq of the newest membership change this client applied
    this.membershipStamp = 0; // when it applied one (see ChatClient._groupsReceived)
    this.bySeq = new Map();
    // The last seq this client has with no gap before it: what it sends as `since` and in recv_ack.
    // null until the first message says where this client's copy starts (the server resumes each
    // conversation after the user's last recv_ack, so older messages were seen on another device).
    this.lastSeq = null;
    this.readSeq = 0; // how far the user has read, here or on another device
    this.readConfirmed = 0; // how far the server has stored it
    this.unreadBase = null; // {upTo, readSeq, count} from the conversation list, for messages not held
    this.reads = new Map(); // other members' read positions: username -> seq
    this.typing = new Map(); // username -> until when (ms) to show them typing
    this.startReached = false; // no earlier messages to page back to
    this.loadingEarlier = false;
    this.keep = KEEP_MESSAGES;
    this.lastActivity = 0;
  }

  /** Messages in seq order. */
  get messages() {
    return [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
  }

  /** The lowest seq held, or null. */
  get oldestSeq() {
    let oldest = null;
    for (const seq of this.bySeq.keys()) if (oldest === null || seq < oldest) oldest = seq;
    return oldest;
  }

  /**
   * What a reader sees, in seq order: text messages, with the edits and recalls that name them
   * (`kind` "edit" or "recall", `refSeq`) applied, and membership notes (`kind` "member").
   */
  get shown() {
    const shown = [];
    const bySeq = new Map();
    for (const m of this.messages) {
      if (m.kind === "edit" || m.kind === "recall") {
        const target = bySeq.get(m.refSeq);
        if (target !== undefined && m.kind === "edit" && !target.recalled) {
          target.body = m.body;
          target.edited = true;
        } else if (target !== undefined && m.kind === "recall") {
          target.body = "";
          target.recalled = true;
        }
        continue;
      }
      const copy = { ...m, edited: false, recalled: false };
      bySeq.set(m.seq, copy);
      shown.push(copy);
    }
    return shown;
  }

  get lastShown() {
    const shown = this.shown;
    return shown.length > 0 ? shown[shown.length - 1] : null;
  }

  /** True when a message past lastSeq is here, so one before it is missing. */
  get hasGap() {
    for (const seq of this.bySeq.keys()) if (seq > this.lastSeq) return true;
    return false;
  }

  /** Store a message; false if its seq was already here. */
  add(message) {
    if (this.bySeq.has(message.seq)) return false;
    if (this.lastSeq === null) this.lastSeq = message.seq - 1;
    this.bySeq.set(message.seq, message);
    while (this.bySeq.has(this.lastSeq + 1)) this.lastSeq += 1;
    this.lastActivity = Math.max(this.lastActivity, message.ts || 0);
    if (this.bySeq.size > this.keep) {
      const oldest = [...this.bySeq.keys()].sort((a, b) => a - b);
      for (const seq of oldest.slice(0, this.bySeq.size - this.keep)) this.bySeq.delete(seq);
      this.startReached = false;
    }
    return true;
  }
}

/**
 * The chat: conversations, outbox, presence and the connection, for one logged-in user.
 *
 * `session` is {token, userId, username, expiresAt}; `options.url` is the WebSocket URL;
 * `options.storage`/`options.tabStorage` (localStorage/sessionStorage, or null) keep the
 * conversations for the next visit and this tab's unsent messages across a reload.
 */
export class ChatClient extends EventTarget {
  constructor(session, options) {
    super();
    this.session = session;
    this.me = { id: session.userId, name: session.username };
    this.url = options.url;
    this.storage = options.storage ?? null;
    this.tabStorage = options.tabStorage ?? null;
    this.conversations = new Map();
    this.outbox = new Map(); // client_msg_id -> entry, in the order they were written
    this.presence = new Map(); // username -> "online" | "offline"
    this.selected = null;
    this.visible = true;
    this.status = { state: "connecting", retryAt: null, detail: "" };
    this.stopped = false;

    this.ws = null;
    this.authed = false;
    this.synced = false;
    this.requests = new Map(); // request id -> what it was
    this.nextRequest = 1;
    this.attempt = 0;
    this.heartbeatMs = 30_000;
    this.awaitingPong = false;
    this.syncing = false;
    this.syncAgain = false;
    this.recvAcked = new Map(); // conv -> seq the server confirmed
    this.recvAckInFlight = new Map(); // conv -> seq sent, not yet confirmed
    this.readInFlight = new Map(); // conv -> seq sent in `read`, not yet confirmed
    this.opened = new Set(); // conversations whose newest history page was asked for on this connection
    this.typingSent = new Map(); // conv -> when this client last sent `typing` there
    this.typingLater = new Map(); // conv -> timer that sends `typing` when the 2 s are over
    this.stamp = 0; // counts membership changes applied, to tell a stale `groups_ok` from a fresh one
    this.timers = {
      reconnect: null,
      connect: null,
      heartbeat: null,
      presence: null,
      recvAck: null,
      read: null,
      groups: null,
      typing: null,
      save: null,
    };
    this.gapTimers = new Map();
    this._load();
  }

  // Public API, for the page.

  /** Open the connection (and keep it open until stop()). */
  start() {
    this.stopped = false;
    this._connect();
  }

  /** Close the connection for good (logging out). */
  stop() {
    this.stopped = true;
    for (const name of Object.keys(this.timers)) this._clearTimer(name);
    for (const timer of this.gapTimers.values()) clearTimeout(timer);
    this.gapTimers.clear();
    for (const entry of this.outbox.values()) clearTimeout(entry.timer);
    for (const timer of this.typingLater.values()) clearTimeout(timer);
    this.typingLater.clear();
    this._dropSocket(1000, "logging out");
    this._setStatus("stopped");
  }

  /** Write what would be saved soon now (the page is going away). */
  flush() {
    if (this.timers.save === null) return;
    this._clearTimer("save");
    this._save();
  }

  /** Forget everything this client stored in the browser for this user (on logout). */
  forgetStored() {
    this.storage?.removeItem(this._historyKey);
    this.tabStorage?.removeItem(this._outboxKey);
  }

  /** Connect now instead of waiting out the backoff (the network came back, or the user asked). */
  reconnectNow() {
    if (this.stopped || this.ws !== null) return;
    this.attempt = 0;
    this._clearTimer("reconnect");
    this._connect();
  }

  /** The conversation the page shows; it is marked read while the page is visible and focused. */
  select(key) {
    this.selected = key;
    this._markSeen();
    this._openSelected();
    this._changed();
  }

  /** Whether the page is visible and focused (only then is the shown conversation read). */
  setVisible(visible) {
    this.visible = visible;
    this._markSeen();
    this._changed();
  }

  /** Open a chat with `name`: the existing conversation, or a draft until the first message is acked. */
  openDirect(name) {
    const peer = normaliseName(name);
    for (const conv of this.conversations.values()) {
      if ((conv.kind === "direct" || conv.kind === "draft") && conv.peer === peer) {
        this.select(conv.key);
        return conv;
      }
    }
    const draft = new Conversation(`new:${peer}`);
    draft.peer = peer;
    draft.lastActivity = Date.now();
    this.conversations.set(draft.key, draft);
    this.select(draft.key);
    this._presenceSoon();
    return draft;
  }

  /** Who a message in `conv` goes to, or null when this client cannot send there. */
  sendTarget(conv) {
    if (conv.kind === "group") return conv.left ? null : { conv: conv.key };
    if (conv.kind === "direct") return conv.peer ? { to: conv.peer } : { conv: conv.key };
    if (conv.kind === "draft" && conv.peer) return { to: conv.peer };
    return null;
  }

  /** A direct chat's other user id, from its key ("d:1:2" seen by user 1 gives 2). */
  peerId(conv) {
    if (conv.kind !== "direct") return null;
    const ids = conv.key.split(":").slice(1).map(Number);
    const other = ids.find((id) => id !== this.me.id);
    return other === undefined ? this.me.id : other;
  }

  /** A conversation's title for people. */
  title(conv) {
    if (conv.kind === "direct" || conv.kind === "draft") {
      if (conv.peer === this.me.name || (conv.kind === "direct" && this.peerId(conv) === this.me.id)) {
        return `${this.me.name} (you)`;
      }
      return conv.peer ?? `user #${this.peerId(conv)}`;
    }
    if (conv.kind === "group") return conv.title ?? `Group #${conv.groupId}`;
    return conv.key;
  }

  /** How many of the other people's text messages the user has not read in `conv`. */
  unreadOf(conv) {
    const me = this.me.name;
    const read = conv.readSeq;
    let n = 0;
    let counted = 0;
    const base = conv.unreadBase;
    if (base !== null && read < base.upTo) {
      // The conversation list counted up to base.upTo; the messages held say the rest.
      if (read <= base.readSeq) n = base.count;
      else {
        for (const m of conv.bySeq.values()) if (m.seq > read && m.seq <= base.upTo && m.from !== me && m.kind === "text") n += 1;
      }
      counted = base.upTo;
    }
    const after = Math.max(read, counted);
    for (const m of conv.bySeq.values()) if (m.seq > after && m.from !== me && m.kind === "text") n += 1;
    return n;
  }

  /** Who has read message `m` of `conv`: for a direct chat true/false, for a group how many others have. */
  readBy(conv, m) {
    if (conv.kind === "group") {
      let n = 0;
      for (const [user, seq] of conv.reads) if (user !== m.from && user !== this.me.name && seq >= m.seq) n += 1;
      return n;
    }
    for (const [user, seq] of conv.reads) if (user !== this.me.name && seq >= m.seq) return true;
    return false;
  }

  /** The names shown as typing in `conv` now. */
  typingIn(conv) {
    const now = Date.now();
    return [...conv.typing.entries()].filter(([, until]) => until > now).map(([name]) => name);
  }

  /** The user is typing in `conv`: tell the others, at most once every 2 s (typing within that is told at its end). */
  typed(conv) {
    if (!this.authed || (conv.kind !== "direct" && conv.kind !== "group") || conv.left) return;
    if (this.typingLater.has(conv.key)) return;
    const wait = (this.typingSent.get(conv.key) ?? -Infinity) + TYPING_EVERY_MS - Date.now();
    if (wait > 0) {
      this.typingLater.set(
        conv.key,
        setTimeout(() => {
          this.typingLater.delete(conv.key);
          this.typed(conv);
        }, wait),
      );
      return;
    }
    this.typingSent.set(conv.key, Date.now());
    this._sendFrame("typing", { conv: conv.key }); // no id: no reply, and a refusal is nothing to act on
  }

  /** A message went out: the others stop showing the user typing, so the next keystroke may say so again. */
  _typingEnded(key) {
    clearTimeout(this.typingLater.get(key));
    this.typingLater.delete(key);
    // The server takes one `typing` a second per conversation: the next may go a second after the last.
    const last = this.typingSent.get(key);
    if (last !== undefined) this.typingSent.set(key, last - TYPING_EVERY_MS + TYPING_MIN_GAP_MS);
  }

  /** Whether older messages of `conv` can be asked for. */
  canLoadEarlier(conv) {
    if (conv.kind === "draft" || conv.kind === "other" || conv.left || conv.startReached) return false;
    const oldest = conv.oldestSeq;
    return oldest !== null && oldest > 1;
  }

  /** Ask for the page of messages before the oldest one held. */
  loadEarlier(conv) {
    if (!this.canLoadEarlier(conv) || conv.loadingEarlier || !this.authed) return;
    conv.loadingEarlier = true;
    const before = conv.oldestSeq;
    this._sendFrame(
      "history",
      { conv: conv.key, before, limit: HISTORY_PAGE },
      { kind: "history", conv: conv.key, before, limit: HISTORY_PAGE },
    );
    this._changed();
  }

  /** Create a group named `name` with `members` (usernames); resolves to its conversation. */
  async createGroup(name, members) {
    const body = await this._request("group_create", { name, members }, { kind: "group_create" });
    const conv = this._groupInfo(body, null);
    if (conv === null) throw new ApiError(0, "internal", "The server's answer named no group.");
    return conv;
  }

  /** Add `names` to the group `conv`; resolves to the list of members actually added. */
  async addMembers(conv, names) {
    const body = await this._request("group_add", { group_id: conv.groupId, users: names }, { kind: "group_add" });
    this._groupsSoon();
    return Array.isArray(body.added) ? body.added : [];
  }

  /** Leave the group `conv`. */
  async leaveGroup(conv) {
    await this._request("group_leave", { group_id: conv.groupId }, { kind: "group_leave" });
    conv.left = true;
    conv.membershipStamp = ++this.stamp;
    this._saveSoon();
    this._changed();
  }

  /** Queue `text` for `conv`; it shows as "sending" until acked. Throws RangeError when it is empty or too long. */
  send(conv, text) {
    const target = this.sendTarget(conv);
    if (target === null) throw new RangeError("This client cannot send to this conversation.");
    checkText(text);
    const entry = this._queue(conv, target, text, null);
    this._typingEnded(conv.key);
    conv.lastActivity = Math.max(conv.lastActivity, entry.created);
    return entry;
  }

  /** Replace the text of the user's own message at `seq` of `conv` (an `edit`). Throws RangeError like send. */
  edit(conv, seq, text) {
    checkText(text);
    return this._queue(conv, { conv: conv.key }, text, { kind: "edit", seq });
  }

  /** Withdraw the user's own message at `seq` of `conv` (a `recall`). */
  recall(conv, seq) {
    return this._queue(conv, { conv: conv.key }, "", { kind: "recall", seq });
  }

  /** The edit or recall of `seq` in `conv` waiting for its ack, if any. */
  changePending(conv, seq) {
    for (const entry of this.outbox.values()) if (entry.conv === conv.key && entry.change?.seq === seq) return entry;
    return null;
  }

  /** Send a failed message again, as a new message (a refused one was not stored). */
  retry(clientMsgId) {
    const old = this.outbox.get(clientMsgId);
    if (!old || old.state !== "failed") return;
    this.outbox.delete(clientMsgId);
    const conv = this.conversations.get(old.conv);
    if (conv) this.send(conv, old.body);
  }

  /** Drop a failed message. */
  discard(clientMsgId) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry || entry.state !== "failed") return;
    this.outbox.delete(clientMsgId);
    this._saveSoon();
    this._changed();
  }

  /** The messages of `conv` in the outbox (not its edits and recalls), oldest first. */
  pendingIn(conv) {
    return [...this.outbox.values()].filter((entry) => entry.conv === conv.key && !entry.change);
  }

  // The connection.

  _connect() {
    if (this.stopped) return;
    if (this.session.expiresAt && this.session.expiresAt * 1000 <= Date.now()) {
      this._loginAgain("Your session has expired. Log in again.");
      return;
    }
    this._setStatus("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      this._setStatus("connecting", String(error));
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this._sendFrame("auth", { token: this.session.token }, { kind: "auth" });
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws || typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._frameReceived(frame);
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this._closed(event.code, event.reason);
    };
    this._setTimer("connect", CONNECT_TIMEOUT_MS, () => {
      if (!this.authed) this._lost("the server did not answer in time");
    });
  }

  _closed(code, reason) {
    this._detach();
    const loginMessage = LOGIN_AGAIN.get(code);
    if (loginMessage) {
      this._loginAgain(loginMessage);
      return;
    }
    this._setStatus("waiting", reason ? `closed ${code}: ${reason}` : `closed ${code}`);
    this._scheduleReconnect();
  }

  /** Give up on the current socket (no pong, no auth_ok in time) and reconnect with backoff. */
  _lost(why) {
    this._dropSocket(4000, why);
    this._setStatus("waiting", why);
    this._scheduleReconnect();
  }

  _dropSocket(code, reason) {
    const ws = this.ws;
    this._detach();
    if (ws !== null) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        // Already closing or closed.
      }
    }
  }

  /** Forget the socket and everything that was in flight on it; unacked sends go back to waiting. */
  _detach() {
    this.ws = null;
    this.authed = false;
    this.synced = false;
    this.syncing = false;
    this.syncAgain = false;
    this.awaitingPong = false;
    const lost = [...this.requests.values()];
    this.requests.clear();
    this.recvAckInFlight.clear();
    this.readInFlight.clear();
    this.opened.clear();
    for (const name of ["connect", "heartbeat", "presence", "recvAck", "read", "groups"]) this._clearTimer(name);
    for (const entry of this.outbox.values()) {
      clearTimeout(entry.timer);
      entry.timer = null;
      entry.requestId = null;
    }
    for (const conv of this.conversations.values()) conv.loadingEarlier = false;
    for (const request of lost) {
      request.reject?.(new ApiError(0, "network", "The connection was lost. Try again when it is back."));
    }
  }

  _scheduleReconnect() {
    if (this.stopped) return;
    const delay = reconnectDelay(this.attempt);
    this.attempt += 1;
    this.status.retryAt = Date.now() + delay;
    this._setTimer("reconnect", delay, () => this._connect());
    this._changed();
  }

  _loginAgain(message) {
    this.stop();
    this.dispatchEvent(new CustomEvent("loggedout", { detail: { message } }));
  }

  _setStatus(state, detail = "") {
    this.status = { state, retryAt: null, detail };
    this._changed();
  }

  _notice(message) {
    this.dispatchEvent(new CustomEvent("notice", { detail: { message } }));
  }

  // Frames.

  _sendFrame(type, body, request) {
    if (this.ws === null || this.ws.readyState !== WebSocket.OPEN) return null;
    const frame = { v: PROTOCOL_VERSION, type, body };
    let id = null;
    if (request) {
      id = `r${this.nextRequest++}`;
      frame.id = id;
      this.requests.set(id, request);
    }
    this.ws.send(JSON.stringify(frame));
    return id;
  }

  /** Send a request whose reply the caller waits for: resolves to the reply's body, rejects with an ApiError. */
  _request(type, body, request) {
    return new Promise((resolve, reject) => {
      if (!this.authed) {
        reject(new ApiError(0, "network", "Not connected. Try again when the connection is back."));
        return;
      }
      this._sendFrame(type, body, { ...request, resolve, reject });
    });
  }

  _frameReceived(frame) {
    if (frame === null || typeof frame !== "object" || frame.v !== PROTOCOL_VERSION) return;
    const body = frame.body && typeof frame.body === "object" ? frame.body : {};
    let request;
    if (typeof frame.id === "string") {
      request = this.requests.get(frame.id);
      this.requests.delete(frame.id);
    }
    switch (frame.type) {
      case "auth_ok":
        this._authenticated(body);
        break;
      case "pong":
        this.awaitingPong = false;
        break;
      case "ack":
        this._acked(body);
        break;
      case "push":
        this._pushed(body);
        break;
      case "sync_ok":
        this._synced(body);
        break;
      case "recv_ack_ok":
        if (request?.kind === "recv_ack") this._recvAckConfirmed(request.conv, request.seq);
        break;
      case "read_ok":
        if (request?.kind === "read") this._readConfirmed(request.conv, body.seq);
        break;
      case "presence_ok":
        this._presenceReceived(body);
        break;
      case "presence":
        // A contact came online or went offline (pushed; the presence_ok poll covers what came before).
        if (typeof body.user === "string") this._presenceReceived({ users: { [body.user]: body.status } });
        break;
      case "receipt":
        this._receiptReceived(body);
        break;
      case "typing":
        this._typingReceived(body);
        break;
      case "history_ok":
        if (request?.kind === "history") this._historyReceived(body, request);
        break;
      case "conversations_ok":
        this._conversationsReceived(body);
        break;
      case "groups_ok":
        if (request?.kind === "groups") this._groupsReceived(body, request.stamp);
        break;
      case "group_members_ok":
        this._membersReceived(body);
        break;
      case "error":
        this._errorReceived(body, request, frame.id);
        break;
      default:
        break; // Frame types this client does not know are ignored, as the protocol asks of both sides.
    }
    if (request?.resolve && frame.type !== "error") request.resolve(body);
  }

  _authenticated(body) {
    this.authed = true;
    this._clearTimer("connect");
    this.heartbeatMs = Math.max(1_000, (Number(body.heartbeat) || 30) * 1000);
    this._setStatus("online");
    this._startHeartbeat();
    this._sync();
  }

  _startHeartbeat() {
    this._setTimer("heartbeat", this.heartbeatMs, () => {
      if (this.awaitingPong) {
        this._lost("no answer to ping");
        return;
      }
      this.awaitingPong = true;
      this._sendFrame("ping", {}, { kind: "ping" });
      this._startHeartbeat();
    });
  }

  _sync() {
    if (!this.authed) return;
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    const since = {};
    for (const conv of this.conversations.values()) {
      if (conv.kind !== "draft" && conv.lastSeq !== null) since[conv.key] = conv.lastSeq;
    }
    this.syncing = true;
    this._sendFrame("sync", { since }, { kind: "sync" });
  }

  _synced(body) {
    this.syncing = false;
    let incomplete = false;
    for (const part of Array.isArray(body.convs) ? body.convs : []) {
      if (!part || typeof part.conv !== "string") continue;
      for (const message of Array.isArray(part.messages) ? part.messages : []) this._store(message);
      if (part.complete === false) incomplete = true;
    }
    this._recvAckSoon();
    const first = !this.synced;
    this.synced = true;
    if (incomplete || body.complete === false || this.syncAgain) {
      this.syncAgain = false;
      this._sync();
    }
    if (first) {
      this.attempt = 0; // a full resume: the connection works, so the next loss starts the backoff afresh
      for (const entry of this.outbox.values()) if (entry.state === "sending") this._transmit(entry);
      this._pollPresence();
      // Names, unread counts and conversations this browser has not seen yet.
      this._sendFrame("groups", {}, { kind: "groups", stamp: this.stamp });
      this._sendFrame("conversations", {}, { kind: "conversations" });
      this._openSelected();
      this._readSoon();
    }
    this._markSeen();
    this._saveSoon();
    this._changed();
  }

  _pushed(body) {
    if (typeof body.conv !== "string" || !Number.isInteger(body.seq)) return;
    const conv = this._store(body);
    if (conv.hasGap) this._gapSeen(conv);
    // A live message from someone last seen offline: ask again rather than show them offline until the next poll.
    if (body.from !== this.me.name && this.presence.get(body.from) === "offline") this._presenceSoon();
    this._recvAckSoon();
    this._markSeen();
    this._saveSoon();
    this._changed();
  }

  /** Keep a message from a push, a sync or a history reply; returns its conversation. */
  _store(message) {
    const conv = this._conversation(message.conv);
    const own = message.from === this.me.name;
    if (!own && conv.kind === "direct" && conv.peer === null && typeof message.from === "string") {
      this._learnPeer(conv, message.from);
    }
    if (own) {
      // Sent from this tab on an earlier connection whose ack was lost: the sync or push settles it.
      const entry = this.outbox.get(message.client_msg_id);
      if (entry) this._settle(entry, conv);
    }
    const kind = typeof message.kind === "string" ? message.kind : "text";
    const stored = {
      seq: message.seq,
      msgId: String(message.msg_id ?? ""),
      from: String(message.from ?? ""),
      body: String(message.body ?? ""),
      ts: Number(message.ts) || 0,
      clientMsgId: String(message.client_msg_id ?? ""),
      kind,
      refSeq: Number.isInteger(message.ref_seq) ? message.ref_seq : null,
    };
    if (conv.add(stored)) {
      if (kind === "text") conv.typing.delete(stored.from);
      if (kind === "member") this._membershipChanged(conv, stored);
    }
    return conv;
  }

  /** A membership note: follow whether the user is still in the group, and ask for fresh names and counts. */
  _membershipChanged(conv, m) {
    let change = null;
    try {
      change = JSON.parse(m.body);
    } catch {
      change = null;
    }
    if (m.seq > conv.membershipSeq && change && typeof change === "object") {
      conv.membershipSeq = m.seq;
      const me = this.me.name;
      const users = Array.isArray(change.users) ? change.users : [];
      if ((change.action === "left" || change.action === "removed") && change.user === me) conv.left = true;
      else if (change.action === "created" || (change.action === "added" && users.includes(me))) {
        conv.left = false;
        // The user sees the group from here on: what came before is not missing, it is not theirs.
        if (conv.lastSeq < m.seq) {
          conv.lastSeq = m.seq;
          while (conv.bySeq.has(conv.lastSeq + 1)) conv.lastSeq += 1;
        }
      }
      if (change.action === "created" && conv.title === null && typeof change.name === "string") conv.title = change.name;
      conv.membershipStamp = ++this.stamp;
    }
    this._groupsSoon();
  }

  _acked(body) {
    const entry = this.outbox.get(body.client_msg_id);
    if (typeof body.conv !== "string" || !Number.isInteger(body.seq)) return;
    const conv = this._conversation(body.conv);
    if (entry) {
      if (conv.kind === "direct" && conv.peer === null && entry.target.to) this._learnPeer(conv, entry.target.to);
      this._settle(entry, conv);
      conv.add({
        seq: body.seq,
        msgId: String(body.msg_id ?? ""),
        from: this.me.name,
        body: entry.body,
        ts: Number(body.ts) || Date.now(),
        clientMsgId: entry.clientMsgId,
        kind: entry.change ? entry.change.kind : "text",
        refSeq: entry.change ? entry.change.seq : null,
      });
    }
    this._recvAckSoon();
    this._markSeen();
    this._saveSoon();
    this._changed();
  }

  /** The outbox entry is stored as a message of `conv`: take it out of the outbox (and its draft). */
  _settle(entry, conv) {
    clearTimeout(entry.timer);
    this.outbox.delete(entry.clientMsgId);
    if (entry.conv !== conv.key) this._mergeDraft(entry.conv, conv);
  }

  _errorReceived(body, request, requestId) {
    const code = typeof body.code === "string" ? body.code : "internal";
    const message = typeof body.message === "string" ? body.message : code;
    if (!request) return; // rate_limited and bad_frame without an id: the ack timeouts resend what was dropped.
    if (request.reject) {
      request.reject(new ApiError(0, code, describeRefusal(code, message)));
      return;
    }
    if (request.kind === "send") {
      const entry = this.outbox.get(request.clientMsgId);
      if (!entry || entry.requestId !== requestId) return; // about an attempt a later one replaced
      clearTimeout(entry.timer);
      entry.requestId = null;
      if (RETRYABLE.has(code)) {
        entry.timer = setTimeout(() => this._transmit(entry), Math.min(ACK_TIMEOUT_MS, 1_000 * entry.attempts));
      } else if (entry.change) {
        // An edit or recall the server refused (too_late, forbidden...): it did not happen; say why.
        this.outbox.delete(entry.clientMsgId);
        this._notice(describeRefusal(code, message));
        this._saveSoon();
        this._changed();
      } else {
        entry.state = "failed";
        entry.error = message;
        this._saveSoon();
        this._changed();
      }
    } else if (request.kind === "auth") {
      // invalid_token and token_expired come with a close (4401/4402); anything else: reconnect later.
      if (code !== "invalid_token" && code !== "token_expired") this._lost(`auth: ${message}`);
    } else if (request.kind === "sync") {
      this.syncing = false;
      setTimeout(() => this._sync(), 2_000);
    } else if (request.kind === "recv_ack") {
      this.recvAckInFlight.delete(request.conv);
    } else if (request.kind === "read") {
      this.readInFlight.delete(request.conv);
    } else if (request.kind === "history") {
      const conv = this.conversations.get(request.conv);
      if (conv) {
        conv.loadingEarlier = false;
        if (code === "not_member") conv.startReached = true;
        this._changed();
      }
    }
  }

  // Sending.

  _queue(conv, target, text, change) {
    const entry = {
      clientMsgId: randomId(),
      conv: conv.key,
      target,
      body: text,
      change,
      created: Date.now(),
      state: "sending",
      error: null,
      attempts: 0,
      requestId: null,
      timer: null,
    };
    this.outbox.set(entry.clientMsgId, entry);
    this._transmit(entry);
    this._saveSoon();
    this._changed();
    return entry;
  }

  _transmit(entry) {
    if (!this.outbox.has(entry.clientMsgId) || entry.state !== "sending") return;
    clearTimeout(entry.timer);
    entry.timer = null;
    if (!this.authed) return; // sent after the next sync
    entry.attempts += 1;
    let type = "send";
    let body = { client_msg_id: entry.clientMsgId, ...entry.target, body: entry.body };
    if (entry.change) {
      type = entry.change.kind;
      body = { client_msg_id: entry.clientMsgId, conv: entry.conv, seq: entry.change.seq };
      if (type === "edit") body.body = entry.body;
    }
    entry.requestId = this._sendFrame(type, body, { kind: "send", clientMsgId: entry.clientMsgId });
    const wait = Math.min(MAX_ACK_TIMEOUT_MS, ACK_TIMEOUT_MS * 2 ** (entry.attempts - 1));
    entry.timer = setTimeout(() => this._transmit(entry), wait);
  }

  // Conversations.

  _conversation(key) {
    let conv = this.conversations.get(key);
    if (!conv) {
      conv = new Conversation(key);
      this.conversations.set(key, conv);
      if (conv.kind === "group") this._groupsSoon();
    }
    return conv;
  }

  /** A direct chat's other user is `name`: a draft with that name becomes this conversation. */
  _learnPeer(conv, name) {
    conv.peer = normaliseName(name);
    const draftKey = `new:${conv.peer}`;
    if (this.conversations.has(draftKey)) this._mergeDraft(draftKey, conv);
    this._presenceSoon();
  }

  _mergeDraft(draftKey, conv) {
    const draft = this.conversations.get(draftKey);
    if (!draft || draft.kind !== "draft") return;
    this.conversations.delete(draftKey);
    conv.peer ??= draft.peer;
    conv.lastActivity = Math.max(conv.lastActivity, draft.lastActivity);
    for (const entry of this.outbox.values()) if (entry.conv === draftKey) entry.conv = conv.key;
    if (this.selected === draftKey) this.selected = conv.key;
  }

  /** The shown conversation, on this connection for the first time: its newest page, and a group's members. */
  _openSelected() {
    const conv = this.selected === null ? null : this.conversations.get(this.selected);
    if (!conv || !this.synced || this.opened.has(conv.key)) return;
    if (conv.kind !== "direct" && conv.kind !== "group") return;
    this.opened.add(conv.key);
    if (conv.left) return;
    this._sendFrame("history", { conv: conv.key, limit: HISTORY_PAGE }, { kind: "history", conv: conv.key, before: null, limit: HISTORY_PAGE });
    if (conv.kind === "group") this._sendFrame("group_members", { group_id: conv.groupId }, { kind: "group_members" });
  }

  _historyReceived(body, request) {
    const conv = this.conversations.get(request.conv);
    if (!conv) return;
    const messages = (Array.isArray(body.messages) ? body.messages : []).filter(
      (m) => m && m.conv === conv.key && Number.isInteger(m.seq),
    );
    if (request.before !== null) {
      conv.loadingEarlier = false;
      conv.keep += messages.length; // the user asked for them: do not trim them away at once
    }
    for (const message of messages) this._store(message);
    if (messages.length < request.limit || conv.oldestSeq === 1) conv.startReached = true;
    this._readsReceived(conv, body.reads);
    if (conv.hasGap) this._gapSeen(conv);
    this._recvAckSoon();
    this._markSeen();
    this._saveSoon();
    this._changed();
  }

  _readsReceived(conv, reads) {
    if (!reads || typeof reads !== "object") return;
    for (const [user, seq] of Object.entries(reads)) {
      if (!Number.isInteger(seq)) continue;
      if (user === this.me.name) this._readConfirmed(conv.key, seq);
      else conv.reads.set(user, maxOf(conv.reads.get(user), seq));
    }
  }

  _conversationsReceived(body) {
    for (const item of Array.isArray(body.convs) ? body.convs : []) {
      if (!item || typeof item.conv !== "string" || conversationKind(item.conv) === "draft") continue;
      const conv = this._conversation(item.conv);
      const title = typeof item.title === "string" ? item.title : null;
      if (conv.kind === "direct" && conv.peer === null && title !== null && !title.startsWith("#")) {
        if (this.peerId(conv) === this.me.id) conv.peer = this.me.name;
        else this._learnPeer(conv, title);
      } else if (conv.kind === "group" && title !== null) {
        conv.title = title;
      }
      const lastSeq = Number.isInteger(item.last_seq) ? item.last_seq : 0;
      const readSeq = Number.isInteger(item.read_seq) ? item.read_seq : 0;
      const unread = Number.isInteger(item.unread) ? item.unread : 0;
      conv.unreadBase = { upTo: lastSeq, readSeq, count: unread };
      this._readConfirmed(conv.key, readSeq);
    }
    this._markSeen();
    this._saveSoon();
    this._changed();
  }

  /**
   * A group the user is in, from group_create_ok (`stamp` null) or from a groups_ok asked for at
   * `stamp`, which says nothing of membership changes applied since; returns its conversation.
   */
  _groupInfo(group, stamp) {
    if (!group || typeof group.conv !== "string" || conversationKind(group.conv) !== "group") return null;
    const conv = this._conversation(group.conv);
    if (typeof group.name === "string") conv.title = group.name;
    if (typeof group.role === "string") conv.role = group.role;
    if (Number.isInteger(group.members)) conv.memberCount = group.members;
    if (Number.isInteger(group.group_id)) conv.groupId = group.group_id;
    if (stamp === null) {
      conv.left = false;
      conv.membershipStamp = ++this.stamp;
    } else if (conv.membershipStamp <= stamp) conv.left = false;
    if (typeof group.created_at === "number") conv.lastActivity = Math.max(conv.lastActivity, group.created_at * 1000);
    this._saveSoon();
    this._changed();
    return conv;
  }

  _groupsReceived(body, stamp) {
    const listed = new Set();
    for (const group of Array.isArray(body.groups) ? body.groups : []) {
      const conv = this._groupInfo(group, stamp);
      if (conv !== null) listed.add(conv.key);
    }
    // A group not listed is one the user left, unless a membership change came after the request was sent.
    for (const conv of this.conversations.values()) {
      if (conv.kind === "group" && !listed.has(conv.key) && conv.membershipStamp <= stamp) conv.left = true;
    }
    this._saveSoon();
    this._changed();
  }

  _membersReceived(body) {
    if (!Number.isInteger(body.group_id) || !Array.isArray(body.members)) return;
    const conv = this.conversations.get(`g:${body.group_id}`);
    if (!conv) return;
    conv.members = body.members.filter((m) => m && typeof m.user === "string").map((m) => m.user);
    conv.memberCount = conv.members.length;
    this._changed();
  }

  /** Ask for the groups (names, roles, counts) and the shown group's members again, soon. */
  _groupsSoon() {
    if (!this.synced || this.timers.groups !== null) return;
    this._setTimer("groups", 300, () => {
      this._sendFrame("groups", {}, { kind: "groups", stamp: this.stamp });
      const conv = this.selected === null ? null : this.conversations.get(this.selected);
      if (conv?.kind === "group" && !conv.left) {
        this._sendFrame("group_members", { group_id: conv.groupId }, { kind: "group_members" });
      }
    });
  }

  _gapSeen(conv) {
    if (this.gapTimers.has(conv.key)) return;
    this.gapTimers.set(
      conv.key,
      setTimeout(() => {
        this.gapTimers.delete(conv.key);
        if (conv.hasGap) this._sync();
      }, GAP_GRACE_MS),
    );
  }

  // Receipts: recv_ack (what this browser has) and read (what the user has seen).

  _recvAckSoon() {
    if (this.timers.recvAck === null) this._setTimer("recvAck", RECV_ACK_DELAY_MS, () => this._sendRecvAcks());
  }

  _sendRecvAcks() {
    if (!this.authed) return;
    for (const conv of this.conversations.values()) {
      if (conv.kind === "draft" || conv.lastSeq === null || conv.lastSeq <= 0) continue;
      const confirmed = this.recvAcked.get(conv.key) ?? 0;
      const inFlight = this.recvAckInFlight.get(conv.key) ?? 0;
      if (conv.lastSeq > Math.max(confirmed, inFlight)) {
        this.recvAckInFlight.set(conv.key, conv.lastSeq);
        this._sendFrame("recv_ack", { conv: conv.key, seq: conv.lastSeq }, { kind: "recv_ack", conv: conv.key, seq: conv.lastSeq });
      }
    }
  }

  _recvAckConfirmed(key, seq) {
    if (seq > (this.recvAcked.get(key) ?? 0)) this.recvAcked.set(key, seq);
    if ((this.recvAckInFlight.get(key) ?? 0) <= seq) this.recvAckInFlight.delete(key);
  }

  /** The shown conversation, if the user can see it, is read up to its newest gap-free seq. */
  _markSeen() {
    const conv = this.selected === null ? null : this.conversations.get(this.selected);
    if (!conv || !this.visible || conv.kind === "draft" || conv.lastSeq === null) return;
    if (conv.lastSeq > conv.readSeq) {
      conv.readSeq = conv.lastSeq;
      this._saveSoon();
    }
    this._readSoon();
  }

  _readSoon() {
    if (this.timers.read === null) this._setTimer("read", READ_DELAY_MS, () => this._sendReads());
  }

  /** Tell the server how far the user has read, where that passes something of someone else's. */
  _sendReads() {
    if (!this.synced) return;
    for (const conv of this.conversations.values()) {
      if ((conv.kind !== "direct" && conv.kind !== "group") || conv.left) continue;
      const from = Math.max(conv.readConfirmed, this.readInFlight.get(conv.key) ?? 0);
      if (conv.readSeq <= from || !this._othersBetween(conv, from, conv.readSeq)) continue;
      this.readInFlight.set(conv.key, conv.readSeq);
      this._sendFrame("read", { conv: conv.key, seq: conv.readSeq }, { kind: "read", conv: conv.key, seq: conv.readSeq });
    }
  }

  /** Whether `conv` has something from someone else after `from` up to `to` (else reading it tells nobody anything). */
  _othersBetween(conv, from, to) {
    const base = conv.unreadBase;
    if (base !== null && base.count > 0 && from < base.upTo) return true;
    for (const m of conv.bySeq.values()) if (m.seq > from && m.seq <= to && m.from !== this.me.name) return true;
    return false;
  }

  _readConfirmed(key, seq) {
    const conv = this.conversations.get(key);
    if (!conv || !Number.isInteger(seq)) return;
    conv.readConfirmed = Math.max(conv.readConfirmed, seq);
    conv.readSeq = Math.max(conv.readSeq, seq);
    if ((this.readInFlight.get(key) ?? 0) <= seq) this.readInFlight.delete(key);
  }

  _receiptReceived(body) {
    const conv = typeof body.conv === "string" ? this.conversations.get(body.conv) : undefined;
    if (!conv || typeof body.from !== "string" || !Number.isInteger(body.seq)) return;
    if (body.from === this.me.name) this._readConfirmed(conv.key, body.seq); // read on another device
    else conv.reads.set(body.from, maxOf(conv.reads.get(body.from), body.seq));
    this._saveSoon();
    this._changed();
  }

  // Typing.

  _typingReceived(body) {
    const conv = typeof body.conv === "string" ? this.conversations.get(body.conv) : undefined;
    if (!conv || typeof body.from !== "string" || body.from === this.me.name) return;
    conv.typing.set(body.from, Date.now() + TYPING_SHOWN_MS);
    this._typingTimer();
    this._changed();
  }

  /** Re-render when the next "is typing" runs out. */
  _typingTimer() {
    const now = Date.now();
    let next = null;
    for (const conv of this.conversations.values()) {
      for (const [name, until] of conv.typing) {
        if (until <= now) conv.typing.delete(name);
        else next = next === null ? until : Math.min(next, until);
      }
    }
    if (next === null) this._clearTimer("typing");
    else {
      this._setTimer("typing", next - now + 20, () => {
        this._typingTimer();
        this._changed();
      });
    }
  }

  // Presence.

  _presenceSoon() {
    if (this.synced) this._setTimer("presence", 300, () => this._pollPresence());
  }

  _pollPresence() {
    if (!this.authed) return;
    const names = new Set();
    for (const conv of this.conversations.values()) {
      if (conv.peer !== null && conv.peer !== this.me.name) names.add(conv.peer);
    }
    if (names.size > 0) {
      this._sendFrame("presence", { users: [...names].slice(0, MAX_PRESENCE_NAMES) }, { kind: "presence" });
    }
    this._setTimer("presence", PRESENCE_EVERY_MS, () => this._pollPresence());
  }

  _presenceReceived(body) {
    const users = body.users && typeof body.users === "object" ? body.users : {};
    for (const [name, state] of Object.entries(users)) this.presence.set(name, state === "online" ? "online" : "offline");
    this._changed();
  }

  /** "online", "offline", or "unknown" (never asked, a group, or the server would not say). */
  presenceOf(conv) {
    if (conv.peer === null) return "unknown";
    if (conv.peer === this.me.name) return this.status.state === "online" ? "online" : "unknown";
    return this.presence.get(conv.peer) ?? "unknown";
  }

  // Keeping state across visits: conversations in localStorage (per user), the outbox in sessionStorage (per tab).

  get _historyKey() {
    return `gochat.v1.history.${this.me.id}`;
  }

  get _outboxKey() {
    return `gochat.v1.outbox.${this.me.id}`;
  }

  _load() {
    const history = readJson(this.storage, this._historyKey);
    for (const saved of Array.isArray(history?.convs) ? history.convs : []) {
      if (typeof saved?.key !== "string" || conversationKind(saved.key) === "draft") continue;
      const conv = this._conversation(saved.key);
      conv.peer = typeof saved.peer === "string" ? saved.peer : null;
      if (typeof saved.title === "string") conv.title = saved.title;
      if (typeof saved.role === "string") conv.role = saved.role;
      conv.left = saved.left === true;
      if (Number.isInteger(saved.membershipSeq)) conv.membershipSeq = saved.membershipSeq;
      if (Number.isInteger(saved.readSeq)) conv.readSeq = saved.readSeq;
      if (Number.isInteger(saved.readConfirmed)) conv.readConfirmed = saved.readConfirmed;
      if (typeof saved.lastActivity === "number") conv.lastActivity = saved.lastActivity;
      for (const m of Array.isArray(saved.messages) ? saved.messages : []) {
        if (Number.isInteger(m?.seq)) conv.add({ ...m });
      }
      if (Number.isInteger(saved.lastSeq) && (conv.lastSeq === null || saved.lastSeq > conv.lastSeq)) {
        conv.lastSeq = saved.lastSeq;
      }
    }
    const outbox = readJson(this.tabStorage, this._outboxKey);
    for (const saved of Array.isArray(outbox) ? outbox : []) {
      if (typeof saved?.clientMsgId !== "string" || typeof saved.conv !== "string") continue;
      const entry = { change: null, ...saved, attempts: 0, requestId: null, timer: null };
      this.outbox.set(entry.clientMsgId, entry);
      if (!this.conversations.has(entry.conv)) {
        const draft = this._conversation(entry.conv);
        draft.peer = entry.target?.to ?? null;
        draft.lastActivity = entry.created;
      }
    }
  }

  _saveSoon() {
    if (this.timers.save === null) this._setTimer("save", 500, () => this._save());
  }

  _save() {
    if (this.stopped) return;
    const convs = [];
    for (const conv of this.conversations.values()) {
      if (conv.kind === "draft" || (conv.lastSeq === null && conv.kind !== "group")) continue;
      convs.push({
        key: conv.key,
        peer: conv.peer,
        title: conv.title,
        role: conv.role,
        left: conv.left,
        membershipSeq: conv.membershipSeq,
        readSeq: conv.readSeq,
        readConfirmed: conv.readConfirmed,
        lastActivity: conv.lastActivity,
        lastSeq: conv.lastSeq,
        messages: conv.messages.slice(-STORE_MESSAGES),
      });
    }
    writeJson(this.storage, this._historyKey, { convs });
    const outbox = [...this.outbox.values()].map(({ clientMsgId, conv, target, body, change, created, state, error }) => ({
      clientMsgId,
      conv,
      target,
      body,
      change,
      created,
      state,
      error,
    }));
    writeJson(this.tabStorage, this._outboxKey, outbox);
  }

  // Timers and change notification.

  _setTimer(name, ms, callback) {
    this._clearTimer(name);
    this.timers[name] = setTimeout(() => {
      this.timers[name] = null;
      callback();
    }, ms);
  }

  _clearTimer(name) {
    if (this.timers[name] !== null) clearTimeout(this.timers[name]);
    this.timers[name] = null;
  }

  _changed() {
    this.dispatchEvent(new Event("change"));
  }
}

function checkText(text) {
  if (text.trim() === "") throw new RangeError("Write something first.");
  const length = codePoints(text);
  if (length > MAX_BODY_CHARS) throw new RangeError(`Too long: ${length} of at most ${MAX_BODY_CHARS} characters.`);
}

/** A membership note (a message of `kind` "member", whose body is JSON) in words. */
export function describeMember(message) {
  let change;
  try {
    change = JSON.parse(message.body);
  } catch {
    return "The membership changed.";
  }
  const by = typeof change?.by === "string" ? change.by : message.from;
  const users = Array.isArray(change?.users) ? change.users.join(", ") : "";
  switch (change?.action) {
    case "created":
      return `${by} created the group${typeof change.name === "string" ? ` “${change.name}”` : ""}.`;
    case "added":
      return `${by} added ${users || "someone"}${change.role === "admin" ? " as admin" : ""}.`;
    case "removed":
      return `${by} removed ${change.user ?? "someone"}.`;
    case "left":
      return `${change.user ?? by} left${typeof change.owner === "string" ? `; ${change.owner} is the owner now` : ""}.`;
    case "role":
      return `${by} made ${change.user ?? "someone"} ${change.role === "owner" ? "the owner" : (change.role ?? "a member")}.`;
    default:
      return "The membership changed.";
  }
}

function readJson(storage, key) {
  if (storage === null) return null;
  try {
    const text = storage.getItem(key);
    return text === null ? null : JSON.parse(text);
  } catch {
    return null;
  }
}

function writeJson(storage, key, value) {
  if (storage === null) return;
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {
    // Full or disabled storage: the chat goes on, it is just not remembered.
  }
}
