"""
Text sources for the synthetic renderer (synth.py) and the default tokenizer corpus.

Three sources, mixed with configurable weights (TEXT_MIX):
- "prose":  English-like sentences. Function words follow a Zipf law over a hand-written list of
            the most frequent English words (so word lengths and the share of short words look like
            real prose), content words are drawn from Faker's ~1k-word English list, and sentences
            carry proper names, numbers, dates, prices, parentheses, quotes and commas. Word order is
            deliberately not grammatical: a small decoder could otherwise lower its loss by guessing
            the next word instead of reading the image (measured in dev/design.md §9).
- "random": random tokens of mixed case, digits and punctuation. The probe needed 30-50% of such
            strings for the encoder to learn to read at all; they cannot be predicted without looking.
- "entity": one field of a form or letterhead from Faker (names, addresses, phones, e-mails, URLs,
            dates, IDs, prices): the vocabulary of receipts, invoices and tables.

receipt_rows() writes the content of the structured kind (store, address, items whose amounts add
up, totals, payment) from the same sources.

Faker (MIT, no dependencies on Linux) is the one package used: its word lists and generators ship in
the wheel, so nothing is downloaded at run time. The exact strings depend on Faker's data, so pin its
version where two machines must produce identical samples.

Splits are disjoint in text by construction: every text unit (a line, a sentence, an item name) is
hashed and only units whose hash falls in the split's bucket are used (see text_split / pick_text).
Everything takes a random.Random so that a (seed, index) pair always yields the same text.
"""

import bisect
import hashlib
import itertools
import math
import random
import string
import threading

# Every font must render all of CORE_CHARS (printable ASCII, space included) or it is not used.
# EXTRA_CHARS are typographic characters used only with fonts that render them (typeset()).
CORE_CHARS = "".join(chr(c) for c in range(32, 127))
# Latin-1 and Latin Extended-A letters of French, German, Spanish, Nordic names and loanwords, the
# quotes of European typesetting; typeset() puts them into text where the font draws them.
ACCENTED = {"a": "àáâäå", "e": "èéêë", "i": "íîï", "o": "óôöø", "u": "ùúûü", "c": "ç", "n": "ñ", "s": "ß",
            "y": "ÿ", "A": "ÀÁÂÄÅ", "E": "ÉÈÊ", "I": "Í", "O": "ÓÖØ", "U": "ÚÜ", "C": "Ç", "N": "Ñ"}
EXTRA_CHARS = ("\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u20ac\u00a3\u00b0"  # ‘’“”–—…€£°
               "\u00ab\u00bb\u201e" + "".join(ACCENTED.values()))  # «»„ and the accented letters
PUNCT = set(string.punctuation)

# Default weights of the three sources. Lines get many random strings (they force reading);
# pages are mostly prose (they train layout and long outputs).
TEXT_MIX = {"prose": 0.5, "random": 0.3, "entity": 0.2}
PAGE_TEXT_MIX = {"prose": 0.85, "random": 0.1, "entity": 0.05}

# Statistics each source keeps within (tests/test_synth.py measures them on a few thousand units).
# Word length counts letters and digits of a whitespace token without surrounding punctuation;
# shares are over non-space characters; "upper" is over letters. English prose, for reference, has a
# mean word length ~4.7, ~45% words of <= 3 letters, ~3% capitals and a few % punctuation.
TEXT_STATS_BOUNDS = {
    "prose": dict(mean_word_len=(3.8, 5.5), short_words=(0.30, 0.55), letters=(0.85, 0.97),
                  upper=(0.02, 0.10), digits=(0.01, 0.08), punct=(0.02, 0.09)),
    "random": dict(mean_word_len=(3.0, 6.0), letters=(0.55, 0.85), upper=(0.25, 0.50),
                   digits=(0.10, 0.30), punct=(0.05, 0.18)),
    "entity": dict(mean_word_len=(4.5, 9.0), letters=(0.45, 0.80), digits=(0.15, 0.40), punct=(0.04, 0.15)),
    "line": dict(mean_word_len=(3.8, 6.0), letters=(0.65, 0.90), upper=(0.08, 0.25),
                 digits=(0.05, 0.25), punct=(0.03, 0.12)),
}

# Train / val / test share of text units (per mille). The hash makes the assignment a property of
# the text itself, so it is the same on every machine and no text appears in two splits.
SPLIT_BUCKETS = {"train": (0, 900), "val": (900, 950), "test": (950, 1000)}

# The ~120 most frequent English words, roughly in frequency order (rank r gets weight 1/(r+2.7),
# a Zipf-Mandelbrot law). With them, about half of the tokens are short function words, as in prose.
FUNCTION_WORDS = """the of and to a in is that for it was on with as be by at this are from or his have
not an he they which but you were had her she we their all one been has there will would can if more so
what about no its who when up out said into them some than other could only then these two may time new
first also any like over after my our most many us such your me even just because each those very how
where made well must through much before should between under both being while still might here during
without against never often another however it's don't can't I I'm Mr. Dr. three year people way day
man now long down did get make see know own same few last great old""".split()
_FW_CUM = list(itertools.accumulate(1.0 / (r + 2.7) for r in range(len(FUNCTION_WORDS))))

ACRONYMS = "USA UK EU UN NASA FBI CEO PDF HTML USB GPS DNA ATM TV FAQ ID OK PC CPU GPU API ISO UTC".split()
ORDINAL_SUFFIX = {1: "st", 2: "nd", 3: "rd"}
MONTHS = "January February March April May June July August September October November December".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


# -----------------------------------------------------------------------------
# Faker data, loaded once per process (a Faker instance takes ~50 ms to build)

_DATA = None


def _data():
    """Word and name lists pulled out of Faker's en_US providers (weighted lists get cumulative
    weights so one bisect replaces Faker's ~150 us weighted choice)."""
    global _DATA
    if _DATA is None:
        try:
            from faker import Faker
            from faker.providers.address.en_US import Provider as Address
            from faker.providers.lorem.en_US import Provider as Lorem
            from faker.providers.person.en_US import Provider as Person
        except ImportError as e:
            raise ImportError("nanoocr/synth_text.py needs the 'faker' package for its word lists and "
                              "fake entities: pip install faker") from e
        first, last = Person.first_names, Person.last_names
        _DATA = dict(
            Faker=Faker,
            words=sorted(set(w for w in Lorem.word_list if w.isalpha())),
            first=(list(first), list(itertools.accumulate(float(v) for v in first.values()))),
            last=(list(last), list(itertools.accumulate(float(v) for v in last.values()))),
            street_suffixes=list(Address.street_suffixes),
            city_suffixes=list(Address.city_suffixes),
            city_prefixes=list(Address.city_prefixes),
            states_abbr=list(Address.states_abbr),
        )
    return _DATA


def word(rng):
    """A plain dictionary word (Faker's ~1k-word English list)."""
    return rng.choice(_data()["words"])


def _weighted(rng, pair):
    names, cum = pair
    return names[bisect.bisect_right(cum, rng.random() * cum[-1]) if cum else 0]


def first_name(rng):
    return _weighted(rng, _data()["first"])


def last_name(rng):
    return _weighted(rng, _data()["last"])


def city(rng):
    d = _data()
    r = rng.random()
    if r < 0.4:
        return last_name(rng) + rng.choice(d["city_suffixes"])
    if r < 0.7:
        return rng.choice(d["city_prefixes"]) + " " + first_name(rng)
    return first_name(rng) + rng.choice(d["city_suffixes"])


_LOCAL = threading.local()


def faker_call(rng, method):
    """One Faker generator call driven by our rng (so it is deterministic for a (seed, index)).
    One Faker per thread: the call swaps the instance's random source, which threads must not share."""
    fake = getattr(_LOCAL, "fake", None)
    if fake is None:
        fake = _LOCAL.fake = _data()["Faker"]("en_US")
    fake.random = rng
    return str(getattr(fake, method)())


# -----------------------------------------------------------------------------
# Numbers: the digits a document actually contains (years, amounts, dates, codes)

def number(rng):
    r = rng.random()
    if r < 0.18:
        return str(rng.randint(0, 99))
    if r < 0.32:
        return str(rng.randint(1850, 2035))
    if r < 0.42:
        return f"{rng.randint(1000, 999999):,}"
    if r < 0.52:
        return f"{rng.uniform(0, 100):.{rng.randint(1, 3)}f}"
    if r < 0.60:
        return f"{rng.randint(1, 100)}%"
    if r < 0.72:
        return price(rng, symbol=True)
    if r < 0.80:
        return date(rng)
    if r < 0.85:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    if r < 0.90:
        n = rng.randint(1, 40)
        return f"{n}{ORDINAL_SUFFIX.get(n % 10 if n // 10 != 1 else 0, 'th')}"
    if r < 0.95:
        a = rng.randint(1, 90)
        return f"{a}-{a + rng.randint(1, 20)}"
    return f"{rng.randint(1, 9)}.{rng.randint(1, 20)}"


def price(rng, symbol=False):
    v = rng.choice((rng.uniform(0.2, 20), rng.uniform(1, 200), rng.uniform(10, 5000)))
    s = f"{v:,.2f}"
    return ("$" + s) if symbol else s


# The ways a date is written: 07/03/1998, 1998-03-07, March 7, 1998, 7 Mar 1998, 3/7/98
DATE_FORMATS = ("{d:02d}/{m:02d}/{y}", "{y}-{m:02d}-{d:02d}", "{month} {d}, {y}", "{d} {mon} {y}", "{m}/{d}/{yy:02d}")


def date(rng):
    y, m, d = rng.randint(1950, 2035), rng.randint(1, 12), rng.randint(1, 28)
    fmt = DATE_FORMATS[rng.randrange(len(DATE_FORMATS))]
    return fmt.format(d=d, m=m, y=y, yy=y % 100, month=MONTHS[m - 1], mon=MONTHS[m - 1][:3])


# -----------------------------------------------------------------------------
# The three sources. Each returns one unit of text (no newlines).

def prose_word(rng):
    r = rng.random()
    if r < 0.45:
        return FUNCTION_WORDS[bisect.bisect_right(_FW_CUM, rng.random() * _FW_CUM[-1])]
    if r < 0.87:
        return word(rng)
    if r < 0.92:
        k = rng.randrange(5)
        return (first_name(rng), last_name(rng), city(rng), rng.choice(MONTHS), rng.choice(DAYS))[k]
    if r < 0.97:
        return number(rng)
    if r < 0.985:
        return rng.choice(ACRONYMS)
    return word(rng) + "-" + word(rng)  # compound


def prose_sentence(rng, max_words=None):
    """One sentence: capitalised, commas and the odd parenthesis or quote inside, a final mark."""
    n = rng.randint(4, 22) if max_words is None else rng.randint(1, max(1, max_words))
    words = [prose_word(rng) for _ in range(n)]
    for i in range(n - 1):  # commas / semicolons / colons after some words
        r = rng.random()
        if r < 0.08:
            words[i] += ","
        elif r < 0.09:
            words[i] += rng.choice((";", ":"))
    if n >= 4 and rng.random() < 0.08:  # a parenthetical or quoted span of 1-3 words
        i = rng.randrange(1, n - 1)
        j = min(n - 1, i + rng.randint(0, 2))
        o, c = rng.choice((("(", ")"), ('"', '"'), ("'", "'"), ("[", "]")))
        words[i] = o + words[i]  # (i may equal j: two statements, not a tuple assignment)
        words[j] = words[j].rstrip(",;:") + c
    if rng.random() < 0.03:
        words[rng.randrange(n)] += "'s"
    words[0] = words[0][:1].upper() + words[0][1:]
    s = " ".join(words).rstrip(",;:")
    r = rng.random()
    end = "." if r < 0.84 else "?" if r < 0.91 else "!" if r < 0.95 else ":" if r < 0.97 else "..."
    return s + end


def random_token(rng):
    """A token that no language model can guess: mixed case, digits, punctuation."""
    n = rng.randint(1, 8)
    style = rng.random()
    if style < 0.35:
        alphabet = string.ascii_lowercase
    elif style < 0.45:
        alphabet = string.ascii_uppercase
    elif style < 0.60:
        alphabet = string.digits
    elif style < 0.85:
        alphabet = string.ascii_letters + string.digits
    else:
        alphabet = string.ascii_letters + string.digits + string.punctuation
    tok = "".join(rng.choice(alphabet) for _ in range(n))
    if style < 0.35 and rng.random() < 0.3:
        tok = tok.capitalize()
    r = rng.random()
    if r < 0.12:
        tok += rng.choice(".,;:!?")
    elif r < 0.17:
        o, c = rng.choice((("(", ")"), ('"', '"'), ("[", "]"), ("<", ">"), ("{", "}")))
        tok = o + tok + c
    elif r < 0.20:
        tok = rng.choice("#$@&*%+-=/~^_|\\`'") + tok
    return tok


def random_sentence(rng, max_words=None):
    n = rng.randint(2, 12) if max_words is None else rng.randint(1, max(1, max_words))
    return " ".join(random_token(rng) for _ in range(n))


# entity kinds and their weights; faker_call ones are a little slower (~10-30 us)
def entity(rng):
    r = rng.random()
    if r < 0.14:
        name = f"{first_name(rng)} {last_name(rng)}"
        return rng.choice((name, name.upper(), f"{rng.choice(('Mr.', 'Ms.', 'Dr.', 'Mrs.'))} {name}",
                           f"{last_name(rng)}, {first_name(rng)}"))
    if r < 0.26:
        d = _data()
        return f"{rng.randint(1, 9999)} {rng.choice((first_name(rng), last_name(rng)))} {rng.choice(d['street_suffixes'])}"
    if r < 0.36:
        return f"{city(rng)}, {rng.choice(_data()['states_abbr'])} {rng.randint(501, 99950):05d}"
    if r < 0.44:
        return rng.choice(("", "Tel: ", "Phone: ", "Fax: ")) + faker_call(rng, "phone_number")
    if r < 0.50:
        return faker_call(rng, rng.choice(("email", "free_email", "url", "uri")))
    if r < 0.60:
        return rng.choice(("", "Date: ", "Due: ", "Issued ")) + date(rng)
    if r < 0.70:
        return f"{rng.choice(('Total', 'Amount', 'Price', 'Balance', 'Subtotal', 'Tax'))}: {price(rng, symbol=rng.random() < 0.7)}"
    if r < 0.78:
        return faker_call(rng, rng.choice(("company", "job", "catch_phrase", "bs")))
    if r < 0.88:
        label = rng.choice(("Invoice No.", "Order #", "Ref:", "ID", "Account", "SKU", "Serial No."))
        code = faker_call(rng, rng.choice(("ean8", "isbn13", "license_plate", "swift", "ssn", "bothify")))
        return f"{label} {code}"
    method = rng.choice(("country", "color_name", "ipv4", "time", "day_of_week", "iban"))
    # Faker's date/time providers draw between the epoch and *now*, so their strings change from one
    # second to the next: draw these two from our rng instead, to keep samples reproducible
    if method == "time":
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if method == "day_of_week":
        return rng.choice(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"))
    return faker_call(rng, method)


def line_text(rng, mix, max_words):
    """Text for one rendered line: a window of 1..max_words words cut from a sentence of the chosen
    source (so lines start and end mid-sentence, as crops of real lines do), or one entity."""
    src = choose_source(rng, mix)
    if src == "entity":
        return entity(rng)
    words = []
    while len(words) < max_words:
        words += SOURCES[src](rng).split()
    k = rng.randint(1, max_words)
    i = rng.randint(0, len(words) - k)
    return " ".join(words[i:i + k])


SOURCES = {"prose": prose_sentence, "random": random_sentence, "entity": lambda rng, max_words=None: entity(rng)}


def choose_source(rng, mix):
    names = sorted(mix)  # sorted: the choice must not depend on dict insertion order
    return rng.choices(names, weights=[mix[k] for k in names])[0]


def text_stats(texts):
    """The statistics TEXT_STATS_BOUNDS bounds, over a list of texts."""
    s = " ".join(texts)
    chars = [c for c in s if not c.isspace()]
    letters = [c for c in chars if c.isalpha()]
    lens = [len(w.strip(string.punctuation + EXTRA_CHARS)) for w in s.split()]
    lens = [n for n in lens if n]
    n = max(1, len(chars))
    return dict(mean_word_len=sum(lens) / max(1, len(lens)), short_words=sum(x <= 3 for x in lens) / max(1, len(lens)),
                letters=len(letters) / n, upper=sum(c.isupper() for c in letters) / max(1, len(letters)),
                digits=sum(c.isdigit() for c in chars) / n, punct=sum(c in PUNCT for c in chars) / n)


def text_split(text):
    """The split a text unit belongs to: a stable hash (same on every machine and Python version)."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") % 1000
    for split, (lo, hi) in SPLIT_BUCKETS.items():
        if lo <= h < hi:
            return split
    raise AssertionError("unreachable")


def pick_text(rng, split, make, tries=500):
    """Call make() until it returns a unit of this split (~1.1 tries for train, ~20 for val/test)."""
    for _ in range(tries):
        t = make()
        if t and text_split(t) == split:
            return t
    raise RuntimeError(f"no {split} text in {tries} tries: the generator returns too few distinct texts")


def typeset(text, rng, covers, p=1.0):
    """Typographic variants (curly quotes, en/em dashes, ellipsis, other currency) where the font
    renders them; each kind is applied with probability p, so answers carry these characters too."""
    def ok(chars):
        return all(c in covers for c in chars) and rng.random() < p
    if "'" in text and ok("\u2018\u2019"):  # after a letter: apostrophe / closing; else opening
        text = "".join("\u2019" if c == "'" and i and text[i - 1].isalnum() else "\u2018" if c == "'" else c
                       for i, c in enumerate(text))
    if '"' in text and ok("\u201c\u201d\u00ab\u00bb\u201e"):  # alternate opening / closing: English, French, German
        o, c = rng.choice((("\u201c", "\u201d"), ("\u201c", "\u201d"), ("\u00ab", "\u00bb"), ("\u201e", "\u201c")))
        parts = text.split('"')
        text = parts[0] + "".join((o if i % 2 == 0 else c) + part for i, part in enumerate(parts[1:]))
    if " - " in text and ok("\u2013"):
        text = text.replace(" - ", " \u2013 ")
    if "..." in text and ok("\u2026"):
        text = text.replace("...", "\u2026")
    if "$" in text and ok("\u20ac\u00a3"):
        text = text.replace("$", rng.choice(("\u20ac", "\u00a3")))
    if rng.random() < min(1.0, 2.5 * p):  # accents on about a quarter of the words (names, loanwords)
        words = text.split(" ")
        for i, w in enumerate(words):
            spots = [j for j, ch in enumerate(w) if ch in ACCENTED]
            if spots and rng.random() < 0.25:
                j = rng.choice(spots)
                options = [a for a in ACCENTED[w[j]] if a in covers]
                if options:
                    words[i] = w[:j] + rng.choice(options) + w[j + 1:]
        text = " ".join(words)
    return text


# -----------------------------------------------------------------------------
# Receipts: the content of the structured kind (synth.layout_receipt draws it)

RECEIPT_TITLES = ("RECEIPT", "CASH RECEIPT", "INVOICE", "TAX INVOICE", "SALES RECEIPT", "CASH BILL", "ORDER")
RECEIPT_FOOTERS = ("THANK YOU", "THANK YOU FOR SHOPPING WITH US", "PLEASE COME AGAIN", "Have a nice day!",
                   "GOODS SOLD ARE NOT RETURNABLE", "Keep this receipt for returns", "Thank you for your visit")


def receipt_rows(rng, split, cur):
    """The content of one receipt, as rows: ("c", text) centred, ("l", text), ("lr", left, right),
    ("lmr", left, mid, right), ("blank",) an empty answer line, ("rule",) a drawn line (no text).
    A trailing "b" in the row tag means bold. Amounts add up, as on a real receipt."""
    d = _data()
    store = pick_text(rng, split, lambda: faker_call(rng, "company"))
    rows = [("cb", store.upper() if rng.random() < 0.6 else store)]
    rows.append(("c", f"{rng.randint(1, 9999)} {last_name(rng)} {rng.choice(d['street_suffixes'])}"))
    rows.append(("c", f"{city(rng)}, {rng.choice(d['states_abbr'])} {rng.randint(501, 99950):05d}"))
    if rng.random() < 0.7:
        rows.append(("c", "Tel: " + faker_call(rng, "phone_number")))
    rows += [("blank",), ("cb", rng.choice(RECEIPT_TITLES))]
    rows.append(("lr", "Date: " + date(rng), f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"))
    rows.append(("lr", f"{rng.choice(('Cashier', 'Server', 'Clerk'))}: {first_name(rng)}",
                 f"#{rng.randint(1, 99999):05d}"))
    rows.append(("rule",))
    style = rng.randrange(3)  # item row style, one per receipt
    subtotal = 0.0
    for _ in range(rng.randint(1, 12)):
        name = pick_text(rng, split, lambda: item_name(rng))
        qty = rng.choice((1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 10))
        unit = round(rng.choice((rng.uniform(0.2, 10), rng.uniform(1, 60), rng.uniform(10, 400))), 2)
        amount = qty * unit
        subtotal += amount
        if style == 0:
            rows.append(("lr", (f"{qty} " if qty > 1 else "") + name, f"{cur}{amount:,.2f}"))
        elif style == 1:
            rows.append(("lmr", name, f"{qty} x {unit:.2f}", f"{cur}{amount:,.2f}"))
        else:
            rows += [("l", name), ("lr", f"  {qty} x {unit:.2f}", f"{cur}{amount:,.2f}")]
    rate = rng.choice((0, 5, 6, 7, 8.25, 10, 20))
    tax = round(subtotal * rate / 100, 2)
    total = subtotal + tax
    rows += [("rule",), ("lr", "Subtotal", f"{cur}{subtotal:,.2f}")]
    if rate:
        rows.append(("lr", f"Tax {rate}%", f"{cur}{tax:,.2f}"))
    rows.append(("lrb", "TOTAL", f"{cur}{total:,.2f}"))
    if rng.random() < 0.6:
        paid = math.ceil(total / 10) * 10 if total > 10 else math.ceil(total)
        rows += [("lr", "Cash", f"{cur}{paid:,.2f}"), ("lr", "Change", f"{cur}{paid - total:,.2f}")]
    else:
        rows.append(("lr", f"{rng.choice(('VISA', 'MASTERCARD', 'AMEX', 'DEBIT'))} ****{rng.randint(0, 9999):04d}",
                     f"{cur}{total:,.2f}"))
    rows += [("blank",)] + [("c", f) for f in rng.sample(RECEIPT_FOOTERS, rng.randint(1, 2))]
    return rows, [store]


def item_name(rng):
    words = [word(rng) for _ in range(rng.randint(1, 3))]
    name = " ".join(words)
    name = name.upper() if rng.random() < 0.6 else name.title()
    r = rng.random()
    if r < 0.2:
        name += f" {rng.choice((100, 250, 500, 750))}{rng.choice(('g', 'ml'))}"
    elif r < 0.3:
        name = f"{rng.randint(1000, 99999)} {name}"
    return name


# -----------------------------------------------------------------------------
# The default tokenizer corpus (scripts/tok_train.py): the same sources, as documents

def corpus_iter(max_chars=10_000_000, seed=0, split="train", mix=None):
    """Yield documents (strings of a few hundred characters) built from the renderer's text sources,
    until max_chars characters have been yielded. Deterministic for (seed, split, mix)."""
    assert split in SPLIT_BUCKETS, f"split must be one of {list(SPLIT_BUCKETS)}, got {split!r}"
    mix = mix or PAGE_TEXT_MIX
    extras = set(CORE_CHARS + EXTRA_CHARS)
    total = 0
    for doc in itertools.count():
        rng = random.Random(f"corpus:{seed}:{split}:{doc}")
        kind = rng.random()
        if kind < 0.6:  # paragraphs of mixed sentences
            paras = []
            for _ in range(rng.randint(1, 4)):
                sents = [pick_text(rng, split, lambda: SOURCES[choose_source(rng, mix)](rng)) for _ in range(rng.randint(2, 8))]
                paras.append(" ".join(sents))
            text = "\n\n".join(paras)
        elif kind < 0.8:  # short lines, as the line kinds render them
            lines = [pick_text(rng, split, lambda: line_text(rng, TEXT_MIX, 8)) for _ in range(rng.randint(3, 12))]
            text = "\n".join(lines)
        else:  # form-like: entity lines
            text = "\n".join(pick_text(rng, split, lambda: entity(rng)) for _ in range(rng.randint(3, 10)))
        if rng.random() < 0.3:
            text = typeset(text, rng, extras)
        text = text[:max(0, max_chars - total)]
        if not text:
            return
        total += len(text)
        yield text
