// Playground: one WebSocket to the console, which relays to the gateway's bridge. Every text is
// put on the page with textContent: nothing typed or answered is ever parsed as HTML.
"use strict";
(function () {
  const chat = document.getElementById("chat");
  const form = document.getElementById("send");
  const text = document.getElementById("text");
  const status = document.getElementById("status");
  const picker = document.getElementById("image");
  const voicePicker = document.getElementById("voice");
  let socket = null;
  let backoff = 500;

  function add(kind, who, content, imageUrl, audioUrl) {
    const item = document.createElement("li");
    item.className = kind;
    const label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = who ? who + ": " : "";
    item.appendChild(label);
    if (imageUrl) {
      const picture = document.createElement("img");
      picture.src = imageUrl;  // the user's own file, as a data: URL
      picture.alt = content || "image";
      item.appendChild(picture);
    }
    if (audioUrl) {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.src = audioUrl;  // the user's own file, as a data: URL
      audio.setAttribute("aria-label", voicePicker.dataset.label);
      item.appendChild(audio);
    }
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

  function readFile(file) {
    return new Promise(function (resolve, reject) {
      const reader = new FileReader();
      reader.onload = function () { resolve(String(reader.result)); };
      reader.onerror = function () { reject(reader.error); };
      reader.readAsDataURL(file);
    });
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const content = text.value.trim();
    const file = picker.files && picker.files[0];
    const voice = voicePicker.files && voicePicker.files[0];
    if ((!content && !file && !voice) || !socket || socket.readyState !== WebSocket.OPEN) return;
    const frame = { content: content, msg_id: (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()) };
    let dataUrl = "";
    if (file) {
      const most = Number(picker.dataset.maxBytes);
      if (file.size > most) { add("error", "", picker.dataset.tooBig + " " + Math.floor(most / 1024) + " KiB"); return; }
      dataUrl = await readFile(file);
      frame.image_base64 = dataUrl.slice(dataUrl.indexOf(",") + 1);
    }
    let audioUrl = "";
    if (voice && !file) {
      const most = Number(voicePicker.dataset.maxBytes);
      if (voice.size > most) { add("error", "", voicePicker.dataset.tooBig + " " + Math.floor(most / 1024) + " KiB"); return; }
      audioUrl = await readFile(voice);
      frame.voice_base64 = audioUrl.slice(audioUrl.indexOf(",") + 1);
    }
    socket.send(JSON.stringify(frame));
    add("you", chat.dataset.you, content || (audioUrl ? voicePicker.dataset.label : ""), dataUrl, audioUrl);
    text.value = "";
    picker.value = "";
    voicePicker.value = "";
    text.focus();
  });
  text.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); form.requestSubmit(); }
  });
  connect();
})();
