"""Model engines behind the small interfaces of `stream.interfaces`.

`registry` turns a model name into a local directory and builds engines (`load_asr`);
`asr_ctranslate2` is the Whisper engine (CPU and CUDA); `vad_silero` is the voice activity model.
Only `server/` imports this package; `stream/` never does.
"""
