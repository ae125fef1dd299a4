"""Using trained runs: workdir loading, KV-cached generation, beam search, seq2seq decoding."""
