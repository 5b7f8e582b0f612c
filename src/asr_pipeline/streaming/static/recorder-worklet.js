// Runs on the audio thread: turns each block of microphone samples (float32) into 16-bit PCM
// and hands ~100 ms batches to the page, which sends them over the WebSocket.
class PcmRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.batch = Math.round(sampleRate / 10);
    this.buffer = new Int16Array(this.batch);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.buffer[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.batch) {
        this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
        this.buffer = new Int16Array(this.batch);
        this.filled = 0;
      }
    }
    return true;
  }
}
registerProcessor("pcm-recorder", PcmRecorder);
