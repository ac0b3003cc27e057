"""Tests for groupvit_jax.tokenizer against independent CLIP tokenizers.

Reference 1 is OpenAI CLIP's own ``simple_tokenizer.py`` (tests/clip_reference.py), with
its own bundled copy of the BPE file.

Reference 2 is Hugging Face's ``CLIPTokenizer``, built from a vocab.json and
merges.txt written from the gz file, used only as a cross-check on plain ASCII.
"""

from __future__ import annotations

import gzip
import html
import json
import pickle
import random
import string

import ftfy
import numpy as np
import pytest

from groupvit_jax import tokenizer as tok_module
from groupvit_jax.tokenizer import DEFAULT_BPE_PATH, ClipTokenizer, default_tokenizer, tokenize

import clip_reference
from clip_reference import EOT, SOT, reference_rows


@pytest.fixture(scope='module')
def reference():
  """OpenAI's SimpleTokenizer with the BPE file bundled in clip-anytorch."""
  return clip_reference.load_module().SimpleTokenizer()


@pytest.fixture(scope='module')
def ours() -> ClipTokenizer:
  return default_tokenizer()


LONG_CAPTION = ' '.join(['a large brown dog running through the tall green grass near a lake'] * 10)

CASES = {
  'plain': 'a photo of a cat sitting on a red couch.',
  'capitals': 'A Photo Of TWO Dogs Playing In The SNOW',
  'chinese': '一只猫坐在红色的沙发上',
  'arabic': 'قطة تجلس على أريكة حمراء',
  'accents': 'café naïve Zoë jalapeño Ångström',
  'greek_cyrillic': 'Ελληνικά и русский текст',
  'devanagari_thai': 'हिन्दी भाषा ภาษาไทย',
  'html_entities': 'Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt; it&#39;s &quot;quoted&quot; &eacute;',
  'double_escaped': 'fish &amp;amp; chips &amp;lt;3',
  # With a '<' in a line ftfy leaves entities alone, so only CLIP's two
  # html.unescape calls decode them (and ftfy carries that to later lines).
  'lt_disables_ftfy_unescape': '1 < 2 &amp;amp; 3 &gt; 2 &amp;amp;amp;',
  'lt_in_earlier_line': 'a < b\nfish &amp;amp;lt; chips',
  'mojibake': 'donâ€™t stop â€œbelievingâ€\x9d cafÃ©',
  'emoji': '🐶🔥👍🏽 👨‍👩‍👧 🇫🇷 ❤️',
  'numbers': '3 cats, 12 dogs and 1,000,000 ants in 2024; 3.14159 ٣ ½',
  'punctuation_runs': 'wow!!! really?!? ... --- ((nested)) $$$ @#% ^&* ~`|\\',
  'contractions': "it's they'll we'd I'm you're we've don't IT'S",
  'whitespace': '  a\tphoto \n\n of  a\r\ncat \x0b\x0c end  ',
  'unicode_whitespace': 'a\u00a0b\u3000c\u2028d\u0085e\x1cf\x1fg',
  'control_chars': 'a\x00b\x07c\x1b[31mred\x1b[0m\x7fd',
  'empty': '',
  'whitespace_only': ' \t\n  \r\n ',
  'special_tokens': '<|startoftext|>hi<|endoftext|>',
  'special_tokens_upper': '<|STARTOFTEXT|> a <|EndOfText|>',
  'special_tokens_glued': 'x<|endoftext|>y !!<|startoftext|>',
  'fullwidth_ligatures': 'ＬＯＵＤ ＮＯＩＳＥＳ ﬂubberiﬁc',
  'case_folding': "İstanbul 'ſ ẞ Kelvin K ǅ",
  'combining': 'e\u0301 a\u0308 n\u0303',
  'curly_quotes': '\u201cquoted\u201d \u2018single\u2019',
  'long': LONG_CAPTION,
  'long_unicode': '猫' * 300,
  'long_single_word': 'a' * 500,
}


@pytest.mark.parametrize('text', list(CASES.values()), ids=list(CASES))
def test_matches_openai_reference(reference, ours, text):
  assert ours.encode(text) == reference.encode(text)
  np.testing.assert_array_equal(tokenize(text), reference_rows(reference, [text]))


def test_truncation_puts_eot_last(reference):
  rows = tokenize([LONG_CAPTION, '猫' * 300])
  assert rows.shape == (2, 77)
  assert (rows[:, 0] == SOT).all() and (rows[:, -1] == EOT).all()
  assert (rows != 0).all()  # no padding in truncated rows
  np.testing.assert_array_equal(rows, reference_rows(reference, [LONG_CAPTION, '猫' * 300]))


@pytest.mark.parametrize('context_length', [2, 3, 16, 77, 200])
def test_other_context_lengths(reference, context_length):
  texts = list(CASES.values())
  rows = tokenize(texts, context_length=context_length)
  assert rows.shape == (len(texts), context_length)
  np.testing.assert_array_equal(rows, reference_rows(reference, texts, context_length))


def test_empty_string_row():
  row = tokenize('')[0]
  assert row[:2].tolist() == [SOT, EOT]
  assert not row[2:].any()


def _random_texts(n: int, seed: int) -> list[str]:
  """Random strings mixing ASCII, many scripts, digits, punctuation, emoji,
  whitespace, HTML entities, mojibake and special-token fragments."""
  rng = random.Random(seed)
  pools = [
    (string.ascii_letters, 6),
    (string.digits, 2),
    (string.punctuation, 3),
    (' ' * 6 + '\t\n\r\x0b\x0c\x1c\u00a0\u3000', 4),
    ('éèêëàâäçñøåæœßÉÀÇÑ', 2),
    ('αβγδεζηθλμπσωΑΒΓΔабвгдежзАБВГД', 2),
    ('的一是不了人我在有他这中大来上国猫狗ひらがなカタカナ한국어', 2),
    ('مرحباשלוםनमस्तेสวัสดี', 1),
    ('٠١٢٣½²³⅓①', 1),
    ('🐶🔥👍🏽👨‍👩‍👧🇫🇷❤️😀🎉\u200d\ufe0f', 2),
    ('\u0301\u0308\u0303\u200b\ufeff\x00\x07\x1b\x7f\x85\x9d', 1),
  ]
  fragments = [
    '&amp;',
    '&lt;',
    '&gt;',
    '&#39;',
    '&quot;',
    '&eacute;',
    'â€™',
    'Ã©',
    'â€œ',
    '<|startoftext|>',
    '<|endoftext|>',
    "'s",
    "'LL",
    "'re",
    "'d",
    'ﬁ',
    'ＡＢＣ',
  ]
  alphabets = [p for p, _ in pools]
  weights = [w for _, w in pools]
  texts = []
  for _ in range(n):
    parts = []
    # About 5% are long enough to be truncated at 77 tokens.
    for _ in range(rng.randint(0, 40) if rng.random() < 0.95 else rng.randint(40, 200)):
      if rng.random() < 0.08:
        parts.append(rng.choice(fragments))
      else:
        parts.append(rng.choice(rng.choices(alphabets, weights)[0]))
    texts.append(''.join(parts))
  return texts


def test_random_strings_match_reference(reference):
  texts = _random_texts(2000, seed=1234)
  np.testing.assert_array_equal(tokenize(texts), reference_rows(reference, texts))


def test_random_ascii_strings_match_reference(reference):
  # Exercises the ASCII fast path (ftfy skipped, stdlib-re split) with every
  # ASCII character, including controls, '&' and '\r' that leave it.
  rng = random.Random(99)
  chars = [chr(i) for i in range(128)] + [' '] * 20 + list(string.ascii_lowercase) * 2
  texts = [''.join(rng.choices(chars, k=rng.randint(0, 60))) for _ in range(1000)]
  np.testing.assert_array_equal(tokenize(texts), reference_rows(reference, texts))


def test_ascii_fast_path_premise():
  # clean_text skips ftfy/html.unescape on text without a _NEEDS_FTFY
  # character; check directly that both really are identities there.
  rng = random.Random(7)
  allowed = [c for c in map(chr, range(128)) if tok_module._NEEDS_FTFY.search(c) is None]
  assert '&' not in allowed and '\r' not in allowed and '\t' in allowed
  for _ in range(500):
    text = ''.join(rng.choices(allowed, k=rng.randint(0, 80)))
    assert ftfy.fix_text(text) == text
    assert html.unescape(text) == text


def test_ascii_pattern_matches_unicode_pattern():
  rng = random.Random(5)
  units = [chr(i) for i in range(128)] + [
    "'s",
    "'S",
    "'ll",
    "'RE",
    '<|startoftext|>',
    '<|endoftext|>',
  ]
  for _ in range(3000):
    text = ''.join(rng.choices(units, k=rng.randint(0, 30)))
    assert tok_module._ASCII_PIECE_PATTERN.findall(text) == tok_module._PIECE_PATTERN.findall(text)


def test_vocabulary_matches_reference(reference, ours):
  assert ours.vocab_size == 49408 == len(reference.encoder)
  assert (ours.sot_token, ours.eot_token) == (SOT, EOT)
  for i in range(ours.vocab_size):
    assert ours.decode([i]) == reference.decode([i]), i


def test_bundled_bpe_file_is_openai_file():
  assert (
    DEFAULT_BPE_PATH.read_bytes()
    == clip_reference.package_file('bpe_simple_vocab_16e6.txt.gz').read_bytes()
  )


@pytest.fixture(scope='module')
def hf_tokenizer(tmp_path_factory):
  """Hugging Face CLIPTokenizer built from files derived from the gz merges."""
  transformers = pytest.importorskip('transformers')
  from transformers.convert_slow_tokenizer import bytes_to_unicode

  lines = gzip.open(DEFAULT_BPE_PATH, 'rt', encoding='utf-8').read().split('\n')
  merges = lines[1 : 49152 - 256 - 2 + 1]
  base = list(bytes_to_unicode().values())
  vocab = base + [b + '</w>' for b in base] + [''.join(m.split()) for m in merges]
  vocab += ['<|startoftext|>', '<|endoftext|>']
  folder = tmp_path_factory.mktemp('hf_clip')
  (folder / 'vocab.json').write_text(
    json.dumps({t: i for i, t in enumerate(vocab)}), encoding='utf-8'
  )
  (folder / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n', encoding='utf-8')
  return transformers.CLIPTokenizer.from_pretrained(str(folder))


# HF's CLIPTokenizer normalises with NFC + whitespace collapse + lower-case only:
# it runs neither ftfy nor html.unescape, so HTML entities, mojibake, full-width
# text and similar cases legitimately differ from CLIP. Compare plain ASCII only.
HF_CAPTIONS = [
  'a photo of a cat sitting on a red couch.',
  'A Photo Of TWO Dogs Playing In The SNOW!',
  "it's they'll we'd I'm you're we've don't",
  '3 cats, 12 dogs and 1,000,000 ants in 2024; 3.14159',
  'wow!!! really?!? ... --- ((nested)) $$$ @#% ^&* ~`|',
  '   lots   of\tspaces \n and newlines   ',
  '',
  LONG_CAPTION,
]


def test_matches_hf_clip_tokenizer_on_ascii(hf_tokenizer):
  rows = tokenize(HF_CAPTIONS)
  expected = hf_tokenizer(HF_CAPTIONS, truncation=True, max_length=77)['input_ids']
  for row, ids in zip(rows, expected):
    assert row[: len(ids)].tolist() == ids
    assert not row[len(ids) :].any()


def test_output_dtype_and_shape():
  rows = tokenize(['a dog', 'a cat on a mat'])
  assert rows.dtype == np.int32
  assert rows.shape == (2, 77)
  assert tokenize('a dog').shape == (1, 77)
  np.testing.assert_array_equal(tokenize('a dog')[0], rows[0])
  assert tokenize(('a dog',)).shape == (1, 77)
  assert tokenize(np.array(['a dog', 'b'])).shape == (2, 77)
  assert tokenize([]).shape == (0, 77)


def test_type_errors():
  with pytest.raises(TypeError, match='str or a sequence of str, got int'):
    tokenize(123)  # type: ignore[arg-type]
  with pytest.raises(TypeError, match='got bytes'):
    tokenize(b'a dog')  # type: ignore[arg-type]
  with pytest.raises(TypeError, match='element 1 is NoneType'):
    tokenize(['a dog', None])  # type: ignore[list-item]
  with pytest.raises(TypeError, match='encode expects a str'):
    default_tokenizer().encode(b'a dog')  # type: ignore[arg-type]
  with pytest.raises(TypeError):
    tokenize('a dog', context_length=7.5)  # type: ignore[arg-type]


@pytest.mark.parametrize('context_length', [1, 0, -5])
def test_context_length_too_small(context_length):
  with pytest.raises(ValueError, match='context_length must be >= 2'):
    tokenize('a dog', context_length=context_length)


def test_decode_round_trip(ours):
  text = "a photo of a dog, sitting on the grass! it's 3 o'clock... (maybe)"
  decoded = ours.decode(ours.encode(text))
  assert ''.join(decoded.split()) == ''.join(text.split())
  assert ours.decode(np.array([SOT, 320, 1929, EOT])) == '<|startoftext|>a dog <|endoftext|>'
  with pytest.raises(ValueError, match='outside the vocabulary'):
    ours.decode([49408])
  with pytest.raises(ValueError, match='outside the vocabulary'):
    ours.decode([-1])


def test_default_tokenizer_is_cached():
  assert default_tokenizer() is default_tokenizer()


def test_small_cache_and_pickle_give_same_ids(ours):
  texts = list(CASES.values())
  tiny = ClipTokenizer(cache_size=2)
  np.testing.assert_array_equal(tiny.tokenize(texts), ours.tokenize(texts))
  restored = pickle.loads(pickle.dumps(tiny))
  np.testing.assert_array_equal(restored.tokenize(texts), ours.tokenize(texts))


def test_bad_bpe_file(tmp_path):
  path = tmp_path / 'bad.txt.gz'
  with gzip.open(path, 'wt', encoding='utf-8') as f:
    f.write('#version: 0.2\na b\n')
  with pytest.raises(ValueError, match='does not hold'):
    ClipTokenizer(path)
