"""
BPE tokenizer in nanochat's format: trained with rustbpe (GPT-4 split pattern with \\p{N}{1,2}),
served by tiktoken, saved as tokenizer.json (plain data) and, for nanochat's own code, a pickled
tiktoken.Encoding (tokenizer.pkl) plus token_bytes.pt.
A tokenizer directory is data, never code: tokenizer.pkl is read by an unpickler that builds
nothing but the four plain fields an Encoding is made of (a pickle that names any other callable
is refused before it runs), and the project also writes tokenizer.json beside it -- the same
fields as JSON -- which is what exports carry and what loading prefers when it is there.
nanochat's nine special tokens take the last ids; the vision system adds <|image|> after them.
A nanochat tokenizer directory without <|image|> gets it appended at id = old vocab size,
which is why load_nanochat_gpt grows the GPT's vocabulary by one row.
"""

import base64
import io
import json
import os
import pickle

import rustbpe
import tiktoken
import torch

SPECIAL_TOKENS = [
    "<|bos|>",  # every document / conversation starts with it
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",
    "<|output_start|>", "<|output_end|>",
]
IMAGE_TOKEN = "<|image|>"  # one placeholder per vision embedding
IMAGE_MARKER = "<image>"  # how DeepSeek-style datasets mark the image inside a prompt

# GPT-4's split pattern, but numbers split into runs of at most 2 digits (nanochat's choice for small vocabs)
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""


class TokenizerError(ValueError):
    pass


TOKENIZER_JSON_FORMAT = "nanoocr-tokenizer"


class _EncodingState:
    """What the unpickler builds where the pickle names tiktoken.core.Encoding: an empty object that
    only keeps the state the pickle hands it (BUILD -> __setstate__). Nothing of tiktoken runs
    until _encoding_from_fields has checked that state is plain data."""

    def __setstate__(self, state):
        self.state = state


class _DataOnlyUnpickler(pickle.Unpickler):
    """pickle.load that resolves exactly one global, tiktoken.core.Encoding (to _EncodingState).
    Any other global -- os.system, builtins.eval, subprocess.Popen, ... -- is how a pickle runs
    code, and is refused here, before it can be called (PyTorch's weights_only loader works alike)."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) == ("tiktoken.core", "Encoding"):
            return _EncodingState
        raise TokenizerError(f"{self.path}: refused: the pickle names {module}.{name}, which a tokenizer does "
                             f"not contain (loading it would run code). Only a pickled tiktoken.Encoding "
                             f"(nanochat's tokenizer.pkl) is read; re-create the tokenizer with "
                             f"`python -m scripts.tok_train`, or get it from a source you trust")

    def persistent_load(self, pid):
        raise TokenizerError(f"{self.path}: refused: the pickle uses persistent ids, which a tokenizer does not")


def _encoding_from_fields(fields, path):
    """A dict {name, pat_str, mergeable_ranks {bytes: int}, special_tokens {str: int}} -> a
    tiktoken.Encoding, after checking every field's type (a message naming the file otherwise)."""
    if not isinstance(fields, dict) or set(fields) != {"name", "pat_str", "mergeable_ranks", "special_tokens"}:
        what = sorted(fields) if isinstance(fields, dict) else type(fields).__name__
        raise TokenizerError(f"{path}: expected a tokenizer's fields name, pat_str, mergeable_ranks, special_tokens; "
                             f"got {what} (a tiktoken *registered* encoding pickled by name is not supported)")
    ranks, specials = fields["mergeable_ranks"], fields["special_tokens"]
    ok = (isinstance(fields["name"], str) and isinstance(fields["pat_str"], str)
          and isinstance(ranks, dict) and all(type(k) is bytes and type(v) is int for k, v in ranks.items())
          and isinstance(specials, dict) and all(type(k) is str and type(v) is int for k, v in specials.items()))
    if not ok:
        raise TokenizerError(f"{path}: a tokenizer field has the wrong type (name, pat_str: str; mergeable_ranks: "
                             f"bytes -> int; special_tokens: str -> int)")
    try:
        return tiktoken.Encoding(name=fields["name"], pat_str=fields["pat_str"], mergeable_ranks=ranks,
                                 special_tokens=specials)
    except Exception as e:  # tiktoken's own checks (ranks vs specials overlapping, a bad regex, ...)
        raise TokenizerError(f"{path}: tiktoken rejects this tokenizer ({type(e).__name__}: {e})") from e


def _load_pickle(path):
    """nanochat's tokenizer.pkl, through _DataOnlyUnpickler -> tiktoken.Encoding."""
    try:
        with open(path, "rb") as f:
            obj = _DataOnlyUnpickler(io.BytesIO(f.read()), path).load()
    except TokenizerError:
        raise
    except Exception as e:
        raise TokenizerError(f"{path}: not a readable tokenizer pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, _EncodingState) or not hasattr(obj, "state"):
        raise TokenizerError(f"{path}: expected a pickled tiktoken.Encoding, got {type(obj).__name__}")
    return _encoding_from_fields(obj.state, path)


def _load_json(path):
    """tokenizer.json (written by Tokenizer.save) -> tiktoken.Encoding. Ranks are the base64 of each
    token's bytes, in rank order."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        assert isinstance(data, dict) and data.get("format") == TOKENIZER_JSON_FORMAT, \
            f'expected "format": "{TOKENIZER_JSON_FORMAT}"'
        assert data.get("format_version", 0) <= 1, f"format_version {data.get('format_version')} is newer than 1"
        ranks = {base64.b64decode(t, validate=True): i for i, t in enumerate(data["mergeable_ranks"])}
        fields = {k: data[k] for k in ("name", "pat_str", "special_tokens")}
    except Exception as e:
        raise TokenizerError(f"{path}: not a readable nanoocr tokenizer.json ({type(e).__name__}: {e})") from e
    return _encoding_from_fields(dict(fields, mergeable_ranks=ranks), path)


def _with_image_token(enc):
    """A tiktoken Encoding with <|image|> appended at id = n_vocab, if it is missing."""
    if IMAGE_TOKEN in enc._special_tokens:
        return enc
    specials = dict(enc._special_tokens)
    specials[IMAGE_TOKEN] = enc.n_vocab
    return tiktoken.Encoding(name=enc.name, pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks,
                             special_tokens=specials)


class Tokenizer:
    def __init__(self, enc):
        self.enc = _with_image_token(enc)
        missing = [t for t in SPECIAL_TOKENS if t not in self.enc._special_tokens]
        if missing:
            raise TokenizerError(f"tokenizer lacks nanochat's special tokens {missing}")
        self.bos_id = self.encode_special("<|bos|>")
        self.image_id = self.encode_special(IMAGE_TOKEN)

    # --- construction / persistence ---------------------------------------------------------
    @classmethod
    def train_from_iterator(cls, text_iterator, vocab_size):
        """Train a BPE of vocab_size ids in total (merges + the 10 special tokens)."""
        n_special = len(SPECIAL_TOKENS) + 1
        assert vocab_size >= 256 + n_special, f"vocab_size must be >= {256 + n_special} (256 bytes + specials)"
        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(text_iterator, vocab_size - n_special, pattern=SPLIT_PATTERN)
        ranks = {bytes(k): v for k, v in tok.get_mergeable_ranks()}
        offset = len(ranks)
        specials = {name: offset + i for i, name in enumerate(SPECIAL_TOKENS + [IMAGE_TOKEN])}
        enc = tiktoken.Encoding(name="rustbpe", pat_str=tok.get_pattern(), mergeable_ranks=ranks, special_tokens=specials)
        return cls(enc)

    @classmethod
    def from_directory(cls, tokenizer_dir):
        """tokenizer.json if the directory has one (ours), else tokenizer.pkl (nanochat's, read as
        data only: see _DataOnlyUnpickler)."""
        path_json = os.path.join(tokenizer_dir, "tokenizer.json")
        path = os.path.join(tokenizer_dir, "tokenizer.pkl")
        if os.path.isfile(path_json):
            return cls(_load_json(path_json))
        if not os.path.isfile(path):
            raise TokenizerError(f"no tokenizer at {path}: train one with `python -m scripts.tok_train` "
                                 f"or point to a nanochat tokenizer directory")
        return cls(_load_pickle(path))

    def save(self, tokenizer_dir, pickles=True):
        """tokenizer.json (plain data, what loading prefers) and, with pickles=True, nanochat's
        tokenizer.pkl + token_bytes.pt (bytes per token id, 0 for specials: for bits-per-byte) so
        nanochat's own code can read the directory. Exports pass pickles=False: only data."""
        os.makedirs(tokenizer_dir, exist_ok=True)
        enc = self.enc
        ranks = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
        assert [r for _, r in ranks] == list(range(len(ranks))), "mergeable ranks must be 0..n-1 to be saved"
        data = {"format": TOKENIZER_JSON_FORMAT, "format_version": 1, "name": enc.name, "pat_str": enc._pat_str,
                "mergeable_ranks": [base64.b64encode(t).decode("ascii") for t, _ in ranks],
                "special_tokens": dict(enc._special_tokens)}
        path = os.path.join(tokenizer_dir, "tokenizer.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)
        if not pickles:
            return
        path = os.path.join(tokenizer_dir, "tokenizer.pkl")
        with open(path + ".tmp", "wb") as f:
            pickle.dump(self.enc, f)
        os.replace(path + ".tmp", path)
        specials = set(self.enc._special_tokens.values())
        token_bytes = torch.tensor([0 if i in specials else len(self.enc.decode_single_token_bytes(i))
                                    for i in range(self.get_vocab_size())], dtype=torch.int32)
        torch.save(token_bytes, os.path.join(tokenizer_dir, "token_bytes.pt.tmp"))
        os.replace(os.path.join(tokenizer_dir, "token_bytes.pt.tmp"), os.path.join(tokenizer_dir, "token_bytes.pt"))

    # --- basic encode / decode -------------------------------------------------------------------
    def get_vocab_size(self):
        return self.enc.n_vocab

    def get_special_tokens(self):
        return set(self.enc._special_tokens)

    def encode_special(self, text):
        return self.enc._special_tokens[text]

    def encode(self, text, prepend=None, append=None):
        """Ordinary text -> ids; special-token strings inside the text are treated as plain text.
        Accepts a list of strings (batch)."""
        if isinstance(text, list):
            return [self.encode(t, prepend, append) for t in text]
        ids = self.enc.encode_ordinary(text)
        if prepend is not None:
            ids.insert(0, prepend if isinstance(prepend, int) else self.encode_special(prepend))
        if append is not None:
            ids.append(append if isinstance(append, int) else self.encode_special(append))
        return ids

    def decode(self, ids):
        return self.enc.decode(list(ids))

    def id_to_token(self, i):
        return self.enc.decode([i])

    # --- chat rendering (dev/design.md §3) ----------------------------------------------------
    def render_conversation(self, conversation, num_image_tokens=0, max_tokens=None):
        """conversation: {"messages": [{"role": "user"|"assistant", "content": str}, ...]} alternating,
        starting with the user. The literal "<image>" in a user message marks where the run of
        num_image_tokens <|image|> placeholders goes (DeepSeek-style prompts write "<image>\\n...").
        Returns (ids, mask): mask is 1 on the tokens the model is trained to produce — assistant
        text and <|assistant_end|> — and 0 elsewhere (bos, user turns, placeholders)."""
        messages = conversation["messages"] if isinstance(conversation, dict) else conversation
        ids, mask = [], []

        def add(tokens, m):
            tokens = [tokens] if isinstance(tokens, int) else tokens
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        add(self.bos_id, 0)
        images_placed = 0
        for i, message in enumerate(messages):
            role, content = message["role"], message["content"]
            expected = "user" if i % 2 == 0 else "assistant"
            assert role == expected, f"message {i} has role {role!r}, expected {expected!r} (user/assistant alternate)"
            if role == "user":
                add(self.encode_special("<|user_start|>"), 0)
                for j, part in enumerate(content.split(IMAGE_MARKER)):
                    if j > 0:
                        add([self.image_id] * num_image_tokens, 0)
                        images_placed += 1
                    if part:
                        add(self.encode(part), 0)
                add(self.encode_special("<|user_end|>"), 0)
            else:
                add(self.encode_special("<|assistant_start|>"), 0)
                add(self.encode(content), 1)
                add(self.encode_special("<|assistant_end|>"), 1)
        if num_image_tokens > 0 and images_placed != 1:
            raise ValueError(f"a vision sample needs exactly one {IMAGE_MARKER!r} marker in its user turn, found "
                             f"{images_placed}")
        if max_tokens is not None:
            ids, mask = ids[:max_tokens], mask[:max_tokens]
        return ids, mask

    def render_for_completion(self, conversation, num_image_tokens=0):
        """Prompt ids for generation: the conversation without its final assistant message (if any),
        ending with <|assistant_start|> so the model writes the answer next."""
        messages = conversation["messages"] if isinstance(conversation, dict) else conversation
        messages = list(messages)
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        ids, _ = self.render_conversation({"messages": messages}, num_image_tokens)
        return ids + [self.encode_special("<|assistant_start|>")]


def ocr_conversation(prompt, answer=None):
    """The conversation for one OCR sample: the image first, then the prompt (dev/design.md §3)."""
    if IMAGE_MARKER not in prompt:
        prompt = IMAGE_MARKER + "\n" + prompt
    messages = [{"role": "user", "content": prompt}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}

