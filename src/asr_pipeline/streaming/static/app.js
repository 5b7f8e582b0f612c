// The page's side of the protocol (see asr_pipeline/streaming/server.py): a start message with
// the microphone's sample rate, binary PCM from an AudioWorklet, then partials and finals shown
// as they come. `?autostart=1` starts at once, `&seconds=N` stops after N seconds (for tests).
const $ = (id) => document.getElementById(id);
let socket = null, context = null, source = null, node = null;

function show(message) {
  if (message.type === "partial") {
    $("partial").textContent = message.text;
  } else if (message.type === "final") {
    const done = $("final").textContent;
    $("final").textContent = (done ? done + " " : "") + message.text;
    $("partial").textContent = "";
  } else if (message.type === "error") {
    $("status").textContent = "error: " + message.message;
  } else if (message.type === "end") {
    $("status").textContent = "done";
    document.body.dataset.done = "1";
  } else if (message.type === "ready") {
    $("status").textContent = "listening at " + message.sample_rate + " Hz";
  }
}

async function start() {
  $("start").disabled = true;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  context = new AudioContext();
  await context.audioWorklet.addModule("/static/recorder-worklet.js");
  source = context.createMediaStreamSource(stream);
  node = new AudioWorkletNode(context, "pcm-recorder");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/stream`);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => show(JSON.parse(event.data));
  socket.onclose = () => { if (!document.body.dataset.done) $("status").textContent = "closed"; };
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "start", sample_rate: context.sampleRate }));
    node.port.onmessage = (event) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(event.data);
    };
    source.connect(node);
    $("stop").disabled = false;
  };
}

function stop() {
  $("stop").disabled = true;
  if (source) source.disconnect();
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "end" }));
  if (context) context.close();
}

$("start").onclick = () => start().catch((error) => { $("status").textContent = "error: " + error; });
$("stop").onclick = stop;
const params = new URLSearchParams(location.search);
if (params.get("autostart")) {
  start().then(() => {
    const seconds = Number(params.get("seconds") || 0);
    if (seconds > 0) setTimeout(stop, seconds * 1000);
  }).catch((error) => { $("status").textContent = "error: " + error; });
}
