// Playground: one WebSocket to the console, which relays to the gateway's bridge. Every text is
// put on the page with textContent: nothing typed or answered is ever parsed as HTML.
"use strict";
(function () {
  const chat = document.getElementById("chat");
  const form = document.getElementById("send");
  const text = document.getElementById("text");
  const status = document.getElementById("status");
  let socket = null;
  let backoff = 500;

  function add(kind, who, content) {
    const item = document.createElement("li");
    item.className = kind;
    const label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = who ? who + ": " : "";
    item.appendChild(label);
    item.appendChild(document.createTextNode(content));
    chat.appendChild(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function setStatus(key) { status.textContent = status.dataset[key]; status.dataset.state = key; }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/playground/ws");
    setStatus("connecting");
    socket.addEventListener("open", function () { backoff = 500; setStatus("connected"); });
    socket.addEventListener("message", function (event) {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type === "reply") add("bot", chat.dataset.bot, String(frame.content));
      else if (frame.type === "error") add("error", "", String(frame.error));
    });
    socket.addEventListener("close", function () {
      setStatus("disconnected");
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const content = text.value.trim();
    if (!content || !socket || socket.readyState !== WebSocket.OPEN) return;
    const msgId = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
    socket.send(JSON.stringify({ content: content, msg_id: msgId }));
    add("you", chat.dataset.you, content);
    text.value = "";
    text.focus();
  });
  text.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); form.requestSubmit(); }
  });
  connect();
})();
