"""
Train the BPE tokenizer (rustbpe, nanochat's split pattern) and save it in nanochat's format
to <base>/tokenizer (tokenizer.json, what nanoocr loads, + nanochat's tokenizer.pkl and token_bytes.pt).

    python -m scripts.tok_train                      # the built-in corpus (the renderer's text sources)
    python -m scripts.tok_train --input=a.txt,b.txt  # your own text files
"""

import os
import time

from nanoocr.common import get_base_dir, print0
from nanoocr.configurator import configure
from nanoocr.tokenizer import Tokenizer

vocab_size = 512  # small on purpose: the CPU recipe reads characters, and 512 ids keep short merges (1.3 bytes/token)
max_chars = 20_000_000  # how much text to train on at most
doc_cap = 10_000  # split long documents into pieces of at most this many characters
input = ""  # comma-separated local text files; empty = the built-in corpus
out_dir = ""  # default <base>/tokenizer
config = configure(globals())


def text_iterator():
    """Yield documents, capped at doc_cap characters each and max_chars in total."""
    if input:
        def docs():
            for path in input.split(","):
                if not os.path.isfile(path):
                    raise SystemExit(f"--input: {path} does not exist")
                with open(path, encoding="utf-8", errors="replace") as f:
                    yield f.read()
    else:
        from nanoocr.synth_text import corpus_iter

        def docs():
            yield from corpus_iter(max_chars=max_chars)
    total = 0
    for doc in docs():
        for i in range(0, len(doc), doc_cap):
            piece = doc[i:i + doc_cap]
            total += len(piece)
            yield piece
            if total >= max_chars:
                return


t0 = time.time()
tokenizer = Tokenizer.train_from_iterator(text_iterator(), vocab_size)
target = out_dir or os.path.join(get_base_dir(), "tokenizer")
tokenizer.save(target)
sample = "Invoice 2026-11-29: The quick brown fox paid $1,299.99."
ids = tokenizer.encode(sample)
print0(f"trained a {tokenizer.get_vocab_size()}-id tokenizer in {time.time() - t0:.1f}s -> {target}")
print0(f"{sample!r} -> {len(ids)} tokens ({len(sample.encode()) / len(ids):.2f} bytes/token)")
