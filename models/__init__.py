"""Model engines behind the small interfaces of `stream.interfaces`.

`registry` is the entry point: it picks the engine of every kind (asr, vad, embedder, index, llm,
ner) from the configuration and loads it; `errors` holds what loading raises. One module per
engine (`asr_ctranslate2`, `vad_silero`, `embed_flag`, `index_faiss`, `llm_llamacpp`,
`llm_exllamav2`, `ner_spacy`), each imported by the registry only when it is loaded; `failover`
and the test seam `fault_injection` wrap ASR engines. Only `server/` (and tests, benchmarks)
imports this package; `stream/` never does.
"""

__all__ = ["errors", "registry"]
