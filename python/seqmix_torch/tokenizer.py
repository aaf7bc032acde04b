"""The tokenizer a text checkpoint carries (its /tokenizer dataset).

"char": one id per Unicode code point; the vocabulary is the corpus's distinct code
points in increasing order, stored as their UTF-8 text, and an id is a rank.
"byte": the 256 byte values of the UTF-8 text; the stored vocabulary is empty.
"""


class Tokenizer:
    def __init__(self, kind, vocabulary=""):
        if kind == "byte":
            if vocabulary:
                raise ValueError(f"tokenizer (byte): the vocabulary must be empty, got {len(vocabulary)} characters")
            self.chars = None
        elif kind == "char":
            if not vocabulary:
                raise ValueError("tokenizer (char): the vocabulary is empty")
            for i in range(1, len(vocabulary)):
                if vocabulary[i] <= vocabulary[i - 1]:
                    raise ValueError(f"tokenizer (char): the vocabulary must list distinct characters in increasing "
                                     f"code point order; U+{ord(vocabulary[i]):04X} at character {i} follows "
                                     f"U+{ord(vocabulary[i - 1]):04X}")
            self.chars = vocabulary
            self._ids = {c: i for i, c in enumerate(vocabulary)}
        else:
            raise ValueError(f"tokenizer kind '{kind}' is not one of char, byte")
        self.kind = kind

    @property
    def vocabulary(self):
        """The stored form: the characters in id order (char), or "" (byte)."""
        return self.chars or ""

    @property
    def vocab_size(self):
        return 256 if self.kind == "byte" else len(self.chars)

    def encode(self, text):
        """text (str) -> list of ids. A character outside the vocabulary is an error
        naming it and its position."""
        if self.kind == "byte":
            return list(text.encode("utf-8"))
        ids = []
        for pos, c in enumerate(text):
            i = self._ids.get(c)
            if i is None:
                raise ValueError(f"tokenizer (char): character {c!r} (U+{ord(c):04X}) at position {pos} is not in "
                                 f"the vocabulary of {len(self.chars)} characters")
            ids.append(i)
        return ids

    def decode(self, ids):
        """ids -> str (byte: the bytes decoded as UTF-8, an invalid sequence replaced
        by U+FFFD)."""
        ids = [int(i) for i in ids]
        for pos, i in enumerate(ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"tokenizer ({self.kind}): id {i} at position {pos} is outside the vocabulary "
                                 f"[0, {self.vocab_size})")
        if self.kind == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.chars[i] for i in ids)

    def __repr__(self):
        return f"Tokenizer({self.kind!r}, {self.vocab_size} tokens)"
