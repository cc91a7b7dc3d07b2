// formats/tokenizer_spm.cc — llama.cpp's SentencePiece (SPM) algorithm for GGUF "llama"
// vocabularies: the text (spaces already "▁") is split into UTF-8 characters, then the adjacent
// pair whose concatenation is a vocabulary token with the highest score is merged, repeatedly
// (ties: leftmost; a priority queue with stale entries skipped), and symbols that never became
// tokens are emitted as byte tokens.
#include <cstdio>
#include <queue>

#include "formats/tokenizer_internal.h"

namespace moetool::tok {

namespace {

struct SpmSymbol {
  int32_t prev, next;
  uint32_t off, len;  // len 0 once merged into the left neighbour
};

struct Bigram {
  int32_t left, right;
  float score;
  uint32_t size;
};

// llama.cpp's llm_bigram_spm::comparator: the top is the highest score, then the leftmost pair.
struct BigramLess {
  bool operator()(const Bigram& l, const Bigram& r) const {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  }
};

}  // namespace

SpmModel::SpmModel(const StrMap& vocab, const std::vector<float>& scores,
                   std::optional<int32_t> unk_id)
    : vocab_(vocab), scores_(scores), byte_tokens_(256, -1), unk_id_(unk_id) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto it = vocab_.find(std::string_view(name)); it != vocab_.end()) {
      byte_tokens_[b] = it->second;
      continue;
    }
    const char c = static_cast<char>(b);  // llama.cpp falls back to the byte as a string
    if (auto it = vocab_.find(std::string_view(&c, 1)); it != vocab_.end())
      byte_tokens_[b] = it->second;
  }
}

void SpmModel::encode(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<SpmSymbol> syms;
  syms.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    const size_t len = std::min(utf8_lead_len(static_cast<uint8_t>(text[off])), text.size() - off);
    const auto idx = static_cast<int32_t>(syms.size());
    syms.push_back({idx - 1, off + len == text.size() ? -1 : idx + 1, static_cast<uint32_t>(off),
                    static_cast<uint32_t>(len)});
    off += len;
  }
  if (syms.empty()) return;

  std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t size = syms[left].len + syms[right].len;
    auto it = vocab_.find(text.substr(syms[left].off, size));
    if (it == vocab_.end() || it->second < 0 || static_cast<size_t>(it->second) >= scores_.size())
      return;
    queue.push({left, right, scores_[it->second], size});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    SpmSymbol& l = syms[b.left];
    SpmSymbol& r = syms[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.size) continue;  // stale
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  // Merged symbols are vocabulary tokens by construction; a lone character may not be, and then
  // becomes its bytes (llama.cpp's resegment()).
  for (int32_t i = 0; i != -1; i = syms[i].next) {
    const std::string_view piece = text.substr(syms[i].off, syms[i].len);
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (char c : piece) {
      const int32_t t = byte_tokens_[static_cast<uint8_t>(c)];
      if (t >= 0) {
        out.push_back(t);
      } else if (unk_id_) {
        out.push_back(*unk_id_);
      }
    }
  }
}

}  // namespace moetool::tok
