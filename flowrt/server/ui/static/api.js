// The dashboard's only way to data: the JSON API under /v1 and its event streams,
// with the bearer token (asked for once, kept in sessionStorage, sent as a header).

const TOKEN_KEY = "flowrt.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function hasToken() {
  return token() !== null;
}

let asking = null;

// One prompt at a time, however many requests met a 401 together.
function askForToken(wrong) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.hidden = !wrong;
  error.textContent = wrong ? "That token was refused; try again." : "";
  input.value = "";
  asking = new Promise((resolve) => {
    const form = document.getElementById("token-form");
    const done = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      form.removeEventListener("submit", done);
      dialog.close();
      asking = null;
      resolve();
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("cancel", (event) => event.preventDefault()); // no data without a token
    dialog.showModal();
    input.focus();
  });
  return asking;
}

async function errorOf(response) {
  let code = "HTTP_ERROR";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = String(body.error);
      code = String(body.code || code);
    }
  } catch (_) {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, code, message);
}

// fetch() with the token; a 401 asks for the token and tries again.
async function authorized(path, init = {}) {
  for (;;) {
    const response = await fetch(path, { ...init, headers: headers(init.headers || {}) });
    if (response.status !== 401) return response;
    const hadToken = hasToken();
    forgetToken();
    await askForToken(hadToken);
  }
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await authorized(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Reads a text/event-stream with fetch (EventSource cannot send a header) and calls
// onMessage({event, data, id}) per message. Reconnects after a drop, sending the last
// id as Last-Event-ID, until the stream ends by itself (`end`) or `signal` aborts.
// onState(true/false) tells whether the stream is connected.
export async function stream(path, { onMessage, onOpen, onComment, onState, signal, lastId = null }) {
  let delay = 500;
  while (!signal.aborted) {
    let ended = false;
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId !== null) extra["Last-Event-ID"] = String(lastId);
      const response = await authorized(path, { headers: extra, signal, cache: "no-store" });
      if (!response.ok) throw await errorOf(response);
      onState && onState(true);
      onOpen && onOpen();
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let event = "";
      let data = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let nl;
        while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
          if (line === "") {
            if (data.length) {
              const message = { event: event || "message", data: JSON.parse(data.join("\n")), id: lastId };
              if (message.event === "end") ended = true;
              onMessage(message);
            }
            event = "";
            data = [];
          } else if (line.startsWith(":")) {
            onComment && onComment(line.slice(1).trim());
          } else {
            const colon = line.indexOf(":");
            const name = colon < 0 ? line : line.slice(0, colon);
            let v = colon < 0 ? "" : line.slice(colon + 1);
            if (v.startsWith(" ")) v = v.slice(1);
            if (name === "data") data.push(v);
            else if (name === "event") event = v;
            else if (name === "id") lastId = v;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
        onState && onState(false);
        throw error; // 404 and friends: reconnecting cannot help
      }
    }
    onState && onState(false);
    if (ended || signal.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}
