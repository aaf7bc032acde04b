// Text corpora (docs/tasks.md#text-corpora): tokenizers, file errors, the 90/10 split,
// training windows and evaluation windows.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/errors.h"
#include "data/recall_tasks.h"
#include "data/text.h"
#include "tests/support/file_testing.h"

using namespace seqmix;
namespace fs = std::filesystem;

namespace {

using seqmix::testing::contains;
using seqmix::testing::error_of;

// The message of the DataError that f throws, or "" if none.
// A scratch directory for the test's files, removed at the end.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("seqmix_test_data_text_" + std::string(info->name()) + "_" +
             std::to_string(::getpid()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

TextOptions text_options(const std::string& path, int64_t L, const std::string& tok = "char") {
  TextOptions o;
  o.path = path;
  o.seq_len = L;
  o.tokenizer = tok;
  return o;
}

// Deterministic pseudo-random text over 40 characters (some multi-byte), so
// that windows of 8 or more tokens are almost surely unique in the corpus.
std::string random_text(int64_t n_chars, uint64_t seed) {
  const std::vector<std::string> alphabet = {
      "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n",
      "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", " ", "\n",
      ".", ",", "é", "ß", "Ж", "λ", "→", "✓", "中", "😀", "𝄞", "!"};
  Generator rng(seed);
  std::string s;
  for (int64_t i = 0; i < n_chars; ++i) s += alphabet[rng.randint(0, alphabet.size())];
  return s;
}

}  // namespace

// ------------------------------------------------------------------ tokenizer

TEST(Tokenizer, CharRoundTripAndSortedVocabulary) {
  const std::string text = "hello wörld ✓ 𝄞 — zebra\nAZ";
  const Tokenizer t = Tokenizer::build("char", text);
  const auto& cps = t.code_points();
  EXPECT_TRUE(std::is_sorted(cps.begin(), cps.end()));
  EXPECT_EQ(std::adjacent_find(cps.begin(), cps.end()), cps.end()) << "no duplicates";
  // Distinct characters: h e l o ' ' w ö r d ✓ 𝄞 — z b a \n A Z
  EXPECT_EQ(t.vocab_size(), 18);
  EXPECT_EQ(cps.front(), U'\n');
  EXPECT_EQ(cps.back(), U'𝄞');
  const auto ids = t.encode(text);
  EXPECT_EQ(ids.size(), 26u) << "one id per code point, not per byte";
  EXPECT_EQ(t.decode(ids), text);
  // id = rank of the code point
  EXPECT_EQ(t.encode("\n"), std::vector<int32_t>{0});
  EXPECT_EQ(t.encode(" "), std::vector<int32_t>{1});
}

TEST(Tokenizer, ByteRoundTrip) {
  const std::string text = "bytes: \x01\x7f é 𝄞";
  const Tokenizer t = Tokenizer::build("byte", text);
  EXPECT_EQ(t.vocab_size(), 256);
  const auto ids = t.encode(text);
  EXPECT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[7], 1);
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 256);
  }
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.vocabulary_utf8(), "");
  // Any byte sequence round-trips, UTF-8 or not.
  EXPECT_EQ(t.decode(t.encode("\xff\xfe")), "\xff\xfe");
}

TEST(Tokenizer, UnknownCharacterIsNamedWithItsPosition) {
  const Tokenizer t = Tokenizer::build("char", "abc ");
  const std::string m = error_of<DataError>([&] { t.encode("ab é"); });
  EXPECT_TRUE(contains(m, "'é'") && contains(m, "U+00E9")) << m;
  EXPECT_TRUE(contains(m, "character position 3") && contains(m, "byte offset 3")) << m;
  const std::string m2 = error_of<DataError>([&] { t.encode("a\tb"); });
  EXPECT_TRUE(contains(m2, "U+0009") && contains(m2, "position 1")) << m2;
  EXPECT_TRUE(contains(error_of<DataError>([&] { t.decode({0, 4}); }), "id 4")) << "ids past the vocabulary";
  EXPECT_TRUE(contains(error_of<DataError>([&] { t.decode({-1}); }), "id -1"));
  EXPECT_TRUE(contains(error_of<DataError>([] { Tokenizer::build("word", "x"); }), "char, byte"));
}

TEST(Tokenizer, VocabularyTravelsAsUtf8) {
  const std::string text = random_text(2000, 1);
  const Tokenizer t = Tokenizer::build("char", text);
  const std::string vocab = t.vocabulary_utf8();
  const Tokenizer u = Tokenizer::from_vocabulary("char", vocab);
  EXPECT_EQ(u.vocab_size(), t.vocab_size());
  EXPECT_EQ(u.code_points(), t.code_points());
  EXPECT_EQ(u.encode(text), t.encode(text));
  EXPECT_EQ(u.decode(t.encode(text)), text);
  // The vocabulary text is itself the sorted distinct characters.
  EXPECT_EQ(t.decode(t.encode(vocab)), vocab);
  EXPECT_EQ(t.encode(vocab).front(), 0);
  const Tokenizer b = Tokenizer::from_vocabulary("byte", "");
  EXPECT_EQ(b.vocab_size(), 256);
  EXPECT_THROW(Tokenizer::from_vocabulary("char", "ba"), DataError);   // not sorted
  EXPECT_THROW(Tokenizer::from_vocabulary("char", "aab"), DataError);  // repeated
  EXPECT_THROW(Tokenizer::from_vocabulary("char", ""), DataError);
  EXPECT_THROW(Tokenizer::from_vocabulary("byte", "abc"), DataError);
}

// The vocabulary against its naive twin (a std::set of the code points), on texts
// whose code points sit on the edges of the tokenizer's 64-bit bitmap words, of
// UTF-8 lengths and of Unicode, and spread over all of Unicode.
TEST(Tokenizer, VocabularyIsTheSortedDistinctCodePointsOfTheText) {
  Generator rng(11);
  const std::vector<char32_t> edges = {0, 1, 63, 64, 65, 127, 128, 0x7FF, 0x800, 0xD7FF, 0xE000,
                                       0xFFFF, 0x10000, 0x10FFFF};
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<char32_t> cps;
    if (trial < 14) cps = {edges[trial], edges[trial]};  // one character, alone
    else if (trial == 14) cps = edges;
    else
      for (int k = 0; k < 500 * trial; ++k) {
        const char32_t c = static_cast<char32_t>(rng.next_u64() % 0x110000);
        if (c < 0xD800 || c > 0xDFFF) cps.push_back(c);
      }
    std::reverse(cps.begin(), cps.end());  // not already in order
    std::string text;
    for (char32_t c : cps) append_utf8(text, c);
    const std::set<char32_t> naive(cps.begin(), cps.end());
    const Tokenizer t = Tokenizer::build("char", text);
    ASSERT_EQ(t.code_points(), std::vector<char32_t>(naive.begin(), naive.end())) << "trial " << trial;
    EXPECT_EQ(t.decode(t.encode(text)), text) << "trial " << trial;
  }
}

TEST(Utf8, StrictValidation) {
  EXPECT_EQ(utf8_invalid_offset("plain ascii"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_offset("é ✓ 𝄞 \U0010FFFF"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_offset("ab\xff"), 2u);                 // never a UTF-8 byte
  EXPECT_EQ(utf8_invalid_offset("a\x80"), 1u);                  // stray continuation byte
  EXPECT_EQ(utf8_invalid_offset("a\xC0\xAF"), 1u);              // overlong '/'
  EXPECT_EQ(utf8_invalid_offset("\xE0\x80\xAF"), 0u);           // overlong, 3 bytes
  EXPECT_EQ(utf8_invalid_offset("x\xED\xA0\x80"), 1u);          // UTF-16 surrogate
  EXPECT_EQ(utf8_invalid_offset("\xF4\x90\x80\x80"), 0u);       // above U+10FFFF
  EXPECT_EQ(utf8_invalid_offset("ok \xE2\x9C"), 3u);            // truncated at the end
  EXPECT_EQ(utf8_invalid_offset("\xE2\x9C" "a"), 0u);           // bad continuation
  std::string s;
  for (char32_t cp : {U'\0', U'a', U'é', U'✓', U'𝄞', U'\U0010FFFF'}) append_utf8(s, cp);
  EXPECT_EQ(utf8_invalid_offset(s), std::string_view::npos);
  EXPECT_EQ(Tokenizer::build("char", s).vocab_size(), 6);
}

// ------------------------------------------------------------------ files

TEST(TextCorpus, FileErrorsNameThePathAndTheProblem) {
  TempDir dir;
  const std::string missing = dir.path("no_such_file.txt");
  std::string m = error_of<DataError>([&] { TextCorpus::load(text_options(missing, 8)); });
  EXPECT_TRUE(contains(m, missing) && contains(m, "not found")) << m;

  const std::string empty = dir.write("empty.txt", "");
  m = error_of<DataError>([&] { TextCorpus::load(text_options(empty, 8)); });
  EXPECT_TRUE(contains(m, empty) && contains(m, "empty")) << m;

  const std::string bad = dir.write("latin1.txt", std::string(100, 'a') + "caf\xe9 au lait" +
                                                      std::string(100, 'b'));
  m = error_of<DataError>([&] { TextCorpus::load(text_options(bad, 8)); });
  EXPECT_TRUE(contains(m, bad) && contains(m, "UTF-8") && contains(m, "byte offset 103") &&
              contains(m, "0xE9"))
      << m;
  m = error_of<DataError>([&] { TextCorpus::load(text_options(bad, 8, "byte")); });
  EXPECT_TRUE(contains(m, "UTF-8")) << "the byte tokenizer also wants a UTF-8 file: " << m;

  m = error_of<DataError>([&] { TextCorpus::load(text_options(dir.path(""), 8)); });
  EXPECT_TRUE(contains(m, "directory")) << m;

  const std::string ok = dir.write("ok.txt", random_text(500, 2));
  m = error_of<DataError>([&] { TextCorpus::load(text_options(ok, 8, "words")); });
  EXPECT_TRUE(contains(m, "tokenizer") && contains(m, "char, byte")) << m;
  m = error_of<DataError>([&] { TextCorpus::load(text_options(ok, 0)); });
  EXPECT_TRUE(contains(m, "seq_len")) << m;
  TextOptions frac = text_options(ok, 8);
  frac.train_fraction = 1.0;
  m = error_of<DataError>([&] { TextCorpus::load(frac); });
  EXPECT_TRUE(contains(m, "train_fraction")) << m;
}

TEST(TextCorpus, SplitsTooShortForAWindowAreRejected) {
  TempDir dir;
  // 100 tokens: train 90, validation 10; windows need seq_len + 1 tokens.
  const std::string p = dir.write("short.txt", random_text(100, 3));
  EXPECT_NO_THROW(TextCorpus::load(text_options(p, 9)));
  const std::string m = error_of<DataError>([&] { TextCorpus::load(text_options(p, 10)); });
  EXPECT_TRUE(contains(m, p) && contains(m, "validation split has 10 tokens") &&
              contains(m, "seq_len + 1 = 11"))
      << m;
}

TEST(TextCorpus, NinetyTenSplit) {
  TempDir dir;
  for (int64_t n : {1000, 1234, 5001}) {
    const std::string text = random_text(n, n);
    const std::string p = dir.write("split.txt", text);
    const TextCorpus c = TextCorpus::load(text_options(p, 16));
    const int64_t n_train = static_cast<int64_t>(n * 0.9);  // nanoGPT: int(n * 0.9)
    EXPECT_EQ(c.num_tokens(Split::train), n_train);
    EXPECT_EQ(c.num_tokens(Split::test), n - n_train);
    // The splits are the corpus in order: train first, validation last.
    const auto all = c.tokenizer().encode(text);
    EXPECT_TRUE(std::equal(all.begin(), all.begin() + n_train, c.tokens(Split::train)));
    EXPECT_TRUE(std::equal(all.begin() + n_train, all.end(), c.tokens(Split::test)));
  }
  EXPECT_EQ(static_cast<int64_t>(1234 * 0.9), 1110);
}

TEST(TextCorpus, ByteTokenizerCountsBytes) {
  const std::string text = random_text(1000, 4);
  TextOptions o = text_options("", 8, "byte");
  const TextCorpus c = TextCorpus::from_text(text, o);
  const int64_t n = static_cast<int64_t>(text.size());
  EXPECT_EQ(c.num_tokens(Split::train) + c.num_tokens(Split::test), n);
  EXPECT_EQ(c.num_tokens(Split::train), static_cast<int64_t>(n * 0.9));
  EXPECT_EQ(c.tokenizer().vocab_size(), 256);
}

TEST(TextCorpus, GivenTokenizerIsUsedAndMustCoverTheText) {
  const std::string text = random_text(1000, 5);
  const Tokenizer t = Tokenizer::build("char", text + "QZ");
  const TextCorpus c = TextCorpus::from_text(text, text_options("", 8), "<memory>", &t);
  EXPECT_EQ(c.tokenizer().vocab_size(), t.vocab_size());
  const Tokenizer small = Tokenizer::build("char", "abc");
  const std::string m =
      error_of<DataError>([&] { TextCorpus::from_text(text, text_options("", 8), "corpus.txt", &small); });
  EXPECT_TRUE(contains(m, "corpus.txt") && contains(m, "not in the vocabulary")) << m;
  const Tokenizer bytes = Tokenizer::build("byte", "");
  EXPECT_THROW(TextCorpus::from_text(text, text_options("", 8), "x", &bytes), DataError);
}

// ------------------------------------------------------------------ windows

TEST(TextCorpus, TrainingWindowsAreContiguousSlicesWithShiftedLabels) {
  const int64_t L = 12, B = 64;
  const std::string text = random_text(3000, 6);
  const TextCorpus c = TextCorpus::from_text(text, text_options("", L));
  for (Split split : {Split::train, Split::test}) {
    const int32_t* tok = c.tokens(split);
    const int64_t n = c.num_tokens(split);
    // Every window start, so that each sampled window can be located.
    std::map<std::vector<int32_t>, int64_t> start_of;
    for (int64_t s = 0; s + L < n; ++s) start_of[std::vector<int32_t>(tok + s, tok + s + L + 1)] = s;
    ASSERT_EQ(static_cast<int64_t>(start_of.size()), n - L) << "windows must be unique here";
    Generator rng(7);
    std::vector<int32_t> in, lab;
    std::set<int64_t> starts;
    for (int rep = 0; rep < 1000; ++rep) {
      c.sample_batch(split, B, rng, in, lab);
      ASSERT_EQ(in.size(), static_cast<size_t>(B * L));
      ASSERT_EQ(lab.size(), static_cast<size_t>(B * L));
      for (int64_t b = 0; b < B; ++b) {
        std::vector<int32_t> window(in.begin() + b * L, in.begin() + (b + 1) * L);
        window.push_back(lab[b * L + L - 1]);
        for (int64_t t = 0; t + 1 < L; ++t) ASSERT_EQ(lab[b * L + t], in[b * L + t + 1]);
        auto it = start_of.find(window);
        ASSERT_NE(it, start_of.end()) << "row " << b << " is not a slice of the split";
        starts.insert(it->second);
      }
    }
    // Every start in [0, n - L) is possible, including both ends.
    EXPECT_EQ(*starts.begin(), 0);
    EXPECT_EQ(*starts.rbegin(), n - L - 1);
  }
}

TEST(TextCorpus, SamplingIsDeterministicGivenTheGenerator) {
  const TextCorpus c = TextCorpus::from_text(random_text(2000, 8), text_options("", 16));
  Generator a(11), b(11), other(12);
  std::vector<int32_t> i1, l1, i2, l2, i3, l3;
  c.sample_batch(Split::train, 8, a, i1, l1);
  c.sample_batch(Split::train, 8, b, i2, l2);
  c.sample_batch(Split::train, 8, other, i3, l3);
  EXPECT_EQ(i1, i2);
  EXPECT_EQ(l1, l2);
  EXPECT_NE(i1, i3);
  EXPECT_EQ(a.counter(), 8u) << "one draw per row";
}

TEST(TextCorpus, EvalWindowsCoverTheSplitExactlyOnce) {
  for (int64_t n : {1000, 1001, 1002, 1013}) {
    const int64_t L = 10;
    const TextCorpus c = TextCorpus::from_text(random_text(n, 9), text_options("", L));
    for (Split split : {Split::train, Split::test}) {
      const int64_t m = c.num_tokens(split);
      const int32_t* tok = c.tokens(split);
      EXPECT_EQ(c.num_eval_windows(split), (m - 1 + L - 1) / L);
      std::vector<int32_t> all_in, all_lab, in, lab;
      for (int64_t w = 0;;) {
        const int64_t rows = c.eval_batch(split, w, 3, in, lab);
        if (rows == 0) break;
        ASSERT_EQ(in.size(), static_cast<size_t>(rows * L));
        all_in.insert(all_in.end(), in.begin(), in.end());
        all_lab.insert(all_lab.end(), lab.begin(), lab.end());
        w += rows;
      }
      ASSERT_EQ(static_cast<int64_t>(all_in.size()), c.num_eval_windows(split) * L);
      // Real positions predict tokens 1..m-1 in order, each once; the padding
      // of the last window is input 0 with label -100.
      int64_t real = 0;
      for (size_t p = 0; p < all_lab.size(); ++p) {
        if (all_lab[p] == kIgnoreLabel) {
          EXPECT_EQ(all_in[p], 0);
          EXPECT_GE(static_cast<int64_t>(p), m - 1) << "padding only at the end";
          continue;
        }
        ASSERT_EQ(static_cast<int64_t>(p), real);
        EXPECT_EQ(all_in[p], tok[p]);
        EXPECT_EQ(all_lab[p], tok[p + 1]);
        ++real;
      }
      EXPECT_EQ(real, m - 1);
    }
  }
}

// ------------------------------------------------------------------ tiny shakespeare

TEST(TextCorpus, TinyShakespeare) {
  const std::string path = SEQMIX_SOURCE_DIR "/../shared/data/tinyshakespeare.txt";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is not present";
  const TextCorpus c = TextCorpus::load(text_options(path, 256));
  EXPECT_EQ(c.tokenizer().vocab_size(), 65) << "nanoGPT's shakespeare_char vocabulary";
  const std::string vocab = c.tokenizer().vocabulary_utf8();
  EXPECT_EQ(vocab.front(), '\n');
  EXPECT_EQ(vocab.back(), 'z');
  const int64_t n = c.num_tokens(Split::train) + c.num_tokens(Split::test);
  EXPECT_EQ(c.num_tokens(Split::train), static_cast<int64_t>(n * 0.9));
  if (n == 1115394) {  // the usual file: nanoGPT's prepare.py reports these splits
    EXPECT_EQ(c.num_tokens(Split::train), 1003854);
    EXPECT_EQ(c.num_tokens(Split::test), 111540);
  }
  const Tokenizer t = Tokenizer::from_vocabulary("char", vocab);
  std::vector<int32_t> first(c.tokens(Split::train), c.tokens(Split::train) + 14);
  EXPECT_EQ(t.decode(first), "First Citizen:");
}
