"""DeepSeek-V2's tokenizer configuration, as a trainable recipe.

`build_deepseek_v2_tokenizer(files_or_iterator, vocab_size)` trains a
byte-level BPE whose every non-learned part is DeepSeek-V2's:

* normalizer: none;
* pre-tokenizer: a Sequence of five regex Splits (behaviour Isolated), then
  Digits(individual_digits=True), then ByteLevel(add_prefix_space=False,
  trim_offsets=True, use_regex=False);
* post-processor: TemplateProcessing putting BOS before every sequence (what
  DeepSeek-V2's tokenizer.json says; DeepSeek-V3 instead leaves BOS to
  tokenizer_config.json's add_bos_token, and transformers honours both);
* decoder: ByteLevel;
* added tokens: `<｜begin▁of▁sentence｜>` and `<｜end▁of▁sentence｜>`, the bars
  being U+FF5C FULLWIDTH VERTICAL LINE and the separators U+2581 LOWER ONE
  EIGHTH BLOCK.

Where the special tokens go.  DeepSeek-V2 numbers its 100000 learned BPE
tokens 0..99999 and puts its added tokens after them: BOS = 100000,
EOS = 100001 (config.json's bos_token_id / eos_token_id).  This recipe does
the same: with `vocab_size = V` the trainer learns at most V-2 BPE tokens
(ids 0..n-1; n < V-2 only when the corpus runs out of pairs to merge), BOS
is n and EOS is n+1, so `Tokenizer.get_vocab_size()` is n+2 <= V.

`write_tokenizer_config(directory, tokenizer)` writes the
`tokenizer_config.json` that transformers reads beside `tokenizer.json`:
add_bos_token true, add_eos_token false, LlamaTokenizerFast, and
DeepSeek-V2-Chat's chat_template.  `build_deepseek_v2_tokenizer(...,
out_dir=DIR)` saves both files into DIR.

The regexes are assembled from code points written in hex, never pasted as
literal characters: several range endpoints in the letter class (U+1F7D,
U+1FD3, U+1FDB, U+1FBE, U+2126, U+212A) are code points that Unicode
normalization (NFC) silently replaces with different ones, which turns the
class into one with descending ranges that PCRE2 rejects and that matches
different text.  Keeping them as numbers makes the trap impossible to fall
into through an editor.
"""

import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models
from tokenizers import pre_tokenizers, processors, trainers

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"

# The letter class of DeepSeek-V2's second Split, as (first, last) code
# points; a single code point is (c, c).  Latin, Greek (with the polytonic
# block U+1F00..1FFF), Cyrillic, Armenian, Georgian, Cherokee, letterlike
# symbols, Glagolitic, Coptic, full-width Latin, and a few astral alphabets
# (Deseret, Osage, Old Hungarian, Warang Citi, Adlam).
LETTER_RANGES = [
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6),
    (0xF8, 0x1BA), (0x1BC, 0x1BF), (0x1C4, 0x293), (0x295, 0x2AF),
    (0x370, 0x373), (0x376, 0x376), (0x377, 0x377), (0x37B, 0x37D),
    (0x37F, 0x37F), (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C),
    (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481), (0x48A, 0x52F),
    (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77),
    (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC),
    (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC),
    (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115),
    (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128),
    (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F),
    (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2183), (0x2184, 0x2184),
    (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF2),
    (0x2CF3, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F),
    (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF), (0xFB00, 0xFB06),
    (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
    (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF),
    (0x1E900, 0x1E943),
]

# The punctuation class of the third Split: ASCII punctuation, full-width
# punctuation, the curly quotes U+2018..201F, and CJK punctuation
# U+3000..3002 (ideographic space, comma, full stop).
PUNCT_RANGES = [
    (0x21, 0x2F), (0x3A, 0x7E), (0xFF01, 0xFF0F), (0xFF1A, 0xFF5E),
    (0x2018, 0x201F), (0x3000, 0x3002),
]

# The CJK class of the fifth Split: U+4E00..9FA5 (the unified ideographs
# of GB-era fonts), U+0800..4E00 (a wide range DeepSeek wrote as written:
# Samaritan through CJK Extension A, kana included), Hangul U+AC00..D7FF.
CJK_RANGES = [(0x4E00, 0x9FA5), (0x0800, 0x4E00), (0xAC00, 0xD7FF)]


def char_class(ranges):
    """Render (first, last) code point pairs as a regex character class.

    Pairs are written as `a-b` when first != last, as one character
    otherwise, in the order given (DeepSeek's order, so the pattern text is
    byte-identical to the checkpoint's)."""
    parts = []
    for first, last in ranges:
        parts.append(chr(first) if first == last
                     else chr(first) + "-" + chr(last))
    return "[" + "".join(parts) + "]"


# The five Split patterns, in order.  Each is applied to every piece the
# previous step produced (a Sequence never sees the whole string again).
SPLIT_PATTERNS = [
    "[\r\n]",                                  # every CR and LF alone
    "\\s?" + char_class(LETTER_RANGES) + "+",  # optional space + letters
    "\\s?" + char_class(PUNCT_RANGES) + "+",   # optional space + punctuation
    "\\s+$",                                   # whitespace ending a piece
    char_class(CJK_RANGES) + "+",              # runs of CJK / Hangul
]

# DeepSeek-V2-Chat's chat template, as its tokenizer_config.json holds it.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}"
    "{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def deepseek_v2_pre_tokenizer():
    """The pre-tokenizer Sequence of DeepSeek-V2's tokenizer.json."""
    steps = [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False)
             for p in SPLIT_PATTERNS]
    steps.append(pre_tokenizers.Digits(individual_digits=True))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False,
                                          trim_offsets=True, use_regex=False))
    return pre_tokenizers.Sequence(steps)


def build_deepseek_v2_tokenizer(files_or_iterator, vocab_size, out_dir=None):
    """Train a byte-level BPE with DeepSeek-V2's configuration.

    files_or_iterator: a list of text file paths, or an iterator of strings.
    vocab_size: the total vocabulary, special tokens included (>= 260: the
    256 byte symbols, at least a couple of merges, BOS and EOS).
    out_dir: when given, tokenizer.json and tokenizer_config.json are
    written there.
    Returns the trained tokenizers.Tokenizer."""
    if vocab_size < 260:
        raise ValueError("vocab_size must be at least 260")
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = deepseek_v2_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2, special_tokens=[], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    if isinstance(files_or_iterator, (list, tuple)) and all(
            isinstance(f, str) and os.path.isfile(f) for f in files_or_iterator):
        tok.train(list(files_or_iterator), trainer)
    else:
        tok.train_from_iterator(files_or_iterator, trainer)
    n_bpe = tok.get_vocab_size()
    tok.add_special_tokens([
        AddedToken(BOS, lstrip=False, rstrip=False, single_word=False,
                   normalized=True, special=True),
        AddedToken(EOS, lstrip=False, rstrip=False, single_word=False,
                   normalized=True, special=True),
    ])
    bos_id = tok.token_to_id(BOS)
    if bos_id != n_bpe or tok.token_to_id(EOS) != n_bpe + 1:
        raise RuntimeError("special tokens did not land after the BPE vocab")
    tok.post_processor = processors.TemplateProcessing(
        single=BOS + " $A", pair=BOS + " $A " + BOS + " $B",
        special_tokens=[(BOS, bos_id)])
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        tok.save(os.path.join(out_dir, "tokenizer.json"))
        write_tokenizer_config(out_dir, tok)
    return tok


def write_tokenizer_config(directory, tokenizer):
    """Write tokenizer_config.json for `tokenizer` into `directory`.

    Mirrors DeepSeek-V2-Chat's file: BOS added by default, no EOS, pad =
    EOS, LlamaTokenizerFast, legacy true, the chat template above."""
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 16384,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }
    if tokenizer.token_to_id(BOS) is None or tokenizer.token_to_id(EOS) is None:
        raise ValueError("tokenizer lacks BOS/EOS")
    path = os.path.join(directory, "tokenizer_config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return path
