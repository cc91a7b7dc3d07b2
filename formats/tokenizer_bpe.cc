// formats/tokenizer_bpe.cc — the BPE merge engine shared by Hugging Face tokenizer.json models
// (byte-level and SentencePiece-style with byte fallback) and llama.cpp's GGUF "gpt2" vocabularies:
// a rank map over pairs of token ids and a priority queue of candidate merges per word, the same
// procedure (lowest rank first, ties to the leftmost pair, stale entries skipped) as HF tokenizers'
// Word::merge_all and llama.cpp's llm_tokenizer_bpe_session.
#include <cstdio>
#include <queue>

#include "formats/tokenizer_internal.h"

namespace moetool::tok {

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Symbol {
  int32_t id;    // token id; -1 for a character outside the vocabulary (llama.cpp mode)
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  uint32_t off;  // byte offset in the word
  uint32_t len;  // bytes; 0 once merged into its left neighbour
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
};

// Max-heap order: the top is the lowest rank, then the leftmost position.
struct CandidateLess {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);
  }
};

}  // namespace

BpeModel::BpeModel(const StrMap& vocab, BpeOptions opts)
    : vocab_(vocab), opts_(std::move(opts)), byte_tokens_(256, -1), single_byte_tokens_(256, -1) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto it = vocab_.find(std::string_view(name)); it != vocab_.end())
      byte_tokens_[b] = it->second;
    const char c = static_cast<char>(b);
    if (auto it = vocab_.find(std::string_view(&c, 1)); it != vocab_.end())
      single_byte_tokens_[b] = it->second;
  }
}

bool BpeModel::add_merge(std::string_view a, std::string_view b) {
  const auto ia = vocab_.find(a), ib = vocab_.find(b);
  if (ia == vocab_.end() || ib == vocab_.end()) return false;
  std::string_view b_tail = b;
  const std::string& prefix = opts_.continuing_subword_prefix;
  if (!prefix.empty() && b_tail.substr(0, prefix.size()) == prefix)
    b_tail.remove_prefix(prefix.size());
  std::string merged;
  merged.reserve(a.size() + b_tail.size());
  merged.append(a).append(b_tail);
  const auto im = vocab_.find(merged);
  if (im == vocab_.end()) return false;
  const uint64_t key = pair_key(ia->second, ib->second);
  const std::pair<int32_t, int32_t> value{static_cast<int32_t>(n_merges_), im->second};
  ++n_merges_;
  if (opts_.later_merge_wins) {
    merges_[key] = value;
  } else {
    merges_.emplace(key, value);
  }
  return true;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  const bool cacheable = opts_.cache_words > 0 && word.size() <= 256;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (auto it = cache_.find(std::string(word)); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  encode_uncached(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < opts_.cache_words)
      cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

void BpeModel::encode_uncached(std::string_view word, std::vector<int32_t>& out) const {
  if (opts_.ignore_merges) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }

  // Initial symbols: one per character (HF BPE::merge_word).
  const std::vector<U8Char> chars = utf8_chars(word);
  std::vector<Symbol> syms;
  syms.reserve(chars.size() + 4);
  auto add = [&](int32_t id, uint32_t off, uint32_t len) {
    syms.push_back({id, -1, -1, off, len});
  };
  bool unk = false;  // a pending unk symbol (HF adds it lazily)
  uint32_t unk_off = 0, unk_len = 0;
  std::string s;
  for (size_t i = 0; i < chars.size(); ++i) {
    const U8Char& c = chars[i];
    const std::string_view raw = word.substr(c.off, c.len);
    std::string_view key = raw;
    const bool decorate = (i > 0 && !opts_.continuing_subword_prefix.empty()) ||
                          (i + 1 == chars.size() && !opts_.end_of_word_suffix.empty());
    if (decorate) {
      s.clear();
      if (i > 0) s += opts_.continuing_subword_prefix;
      s += raw;
      if (i + 1 == chars.size()) s += opts_.end_of_word_suffix;
      key = s;
    }
    if (auto it = vocab_.find(key); it != vocab_.end()) {
      if (unk) {
        add(*opts_.unk_id, unk_off, unk_len);
        unk = false;
      }
      add(it->second, c.off, c.len);
      continue;
    }
    if (opts_.byte_fallback) {
      bool all = true;
      for (char ch : key) all = all && byte_tokens_[static_cast<uint8_t>(ch)] >= 0;
      if (all) {
        // HF adds the byte tokens at once but keeps a pending unk pending (its order, kept).
        for (size_t k = 0; k < key.size(); ++k)
          add(byte_tokens_[static_cast<uint8_t>(key[k])], c.off, 1);
        continue;
      }
    }
    if (opts_.single_byte_fallback) {
      add(-1, c.off, c.len);  // never merges; expanded to single-byte tokens below
      continue;
    }
    if (opts_.unk_id) {
      if (unk && opts_.fuse_unk) {
        unk_len = c.off + c.len - unk_off;
      } else {
        if (unk) add(*opts_.unk_id, unk_off, unk_len);
        unk = true, unk_off = c.off, unk_len = c.len;
      }
    }
    // No unk token: HF drops the character.
  }
  if (unk) add(*opts_.unk_id, unk_off, unk_len);
  if (syms.empty()) return;
  const int32_t n = static_cast<int32_t>(syms.size());
  for (int32_t i = 0; i < n; ++i) {
    syms[i].prev = i - 1;
    syms[i].next = i + 1 < n ? i + 1 : -1;
  }

  // Merge (HF Word::merge_all).
  std::vector<Candidate> storage;
  storage.reserve(syms.size());
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateLess> queue(CandidateLess{},
                                                                              std::move(storage));
  auto lookup = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    if (a < 0 || b < 0) return nullptr;
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const auto* m = lookup(syms[i].id, syms[i + 1].id)) queue.push({m->first, i, m->second});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& cur = syms[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    Symbol& right = syms[cur.next];
    const auto* m = lookup(cur.id, right.id);
    if (!m || m->second != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    right.len = 0;
    cur.next = right.next;
    if (cur.next >= 0) syms[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const auto* pm = lookup(syms[cur.prev].id, cur.id))
        queue.push({pm->first, cur.prev, pm->second});
    }
    if (cur.next >= 0) {
      if (const auto* nm = lookup(cur.id, syms[cur.next].id))
        queue.push({nm->first, top.pos, nm->second});
    }
  }

  for (const Symbol& sym : syms) {
    if (sym.len == 0) continue;
    if (sym.id >= 0) {
      out.push_back(sym.id);
    } else {
      for (uint32_t k = 0; k < sym.len; ++k) {  // llama.cpp: single-byte tokens where they exist
        const int32_t t = single_byte_tokens_[static_cast<uint8_t>(word[sym.off + k])];
        if (t >= 0) out.push_back(t);
      }
    }
  }
}

}  // namespace moetool::tok
