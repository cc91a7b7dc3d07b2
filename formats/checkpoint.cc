// formats/checkpoint.cc — opening HF checkpoints (single file, directory, sharded index).
#include "formats/checkpoint.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/fs.h"

namespace moetool {

namespace fs = std::filesystem;

struct Checkpoint::Impl {
  std::string dir;
  bool has_config = false;
  nlohmann::json config;
  std::vector<std::shared_ptr<SafetensorsFile>> files;
  std::vector<std::string> names;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> where;  // name -> (file index, info)
  std::map<std::string, std::string> aliases;
  uint64_t total = 0;
};

static nlohmann::json read_json(const std::string& path) {
  std::string s = read_file(path);
  try {
    return nlohmann::json::parse(s);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
}

std::map<std::string, std::string> parse_safetensors_index(const std::string& text, const std::string& path,
                                                           std::vector<std::string>* order) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail(path, ": expected an object with a 'weight_map' object");
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> files;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it->is_string()) fail(path, ": weight_map entry '", it.key(), "' must be a file name string");
    const std::string f = it->get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      fail(path, ": weight_map entry '", it.key(), "' names '", f, "', expected a file name in the same directory");
    weight_map[it.key()] = f;
    files.push_back(f);
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  if (order) *order = std::move(files);
  return weight_map;
}

Checkpoint Checkpoint::open(const std::string& path) {
  auto m = std::make_shared<Impl>();
  std::vector<std::string> shard_paths;
  std::map<std::string, std::string> weight_map;  // from the index, if any
  std::string index_path;
  if (is_directory(path)) {
    m->dir = path;
    const std::string idx = path_join(path, "model.safetensors.index.json");
    const std::string single = path_join(path, "model.safetensors");
    if (file_exists(idx)) {
      index_path = idx;
      std::vector<std::string> order;
      weight_map = parse_safetensors_index(read_file(idx), idx, &order);
      for (const auto& f : order) {
        const std::string p = path_join(path, f);
        if (!file_exists(p)) {
          std::string tensor;
          for (const auto& [k, v] : weight_map)
            if (v == f) {
              tensor = k;
              break;
            }
          fail(idx, ": tensor '", tensor, "' maps to missing file '", f, "'");
        }
        shard_paths.push_back(p);
      }
    } else if (file_exists(single)) {
      shard_paths.push_back(single);
    } else {
      std::vector<std::string> found;
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(path, ec))
        if (e.path().extension() == ".safetensors") found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      if (found.empty())
        fail(path, ": no model.safetensors, model.safetensors.index.json or *.safetensors file found");
      shard_paths = found;
    }
  } else if (file_exists(path)) {
    shard_paths.push_back(path);
    m->dir = fs::path(path).parent_path().string();
    if (m->dir.empty()) m->dir = ".";
  } else {
    fail(path, ": no such file or directory");
  }

  const std::string cfg = path_join(m->dir, "config.json");
  if (file_exists(cfg)) {
    m->config = read_json(cfg);
    if (!m->config.is_object()) fail(cfg, ": expected a JSON object");
    m->has_config = true;
  }

  for (const auto& p : shard_paths) {
    auto f = SafetensorsFile::open(p);
    const size_t fi = m->files.size();
    m->files.push_back(f);
    for (const auto& t : f->tensors()) {
      auto [it, fresh] = m->where.emplace(t.name, std::make_pair(fi, &t));
      if (!fresh)
        fail(p, ": tensor '", t.name, "' also stored in ", m->files[it->second.first]->path());
      m->names.push_back(t.name);
      m->total += t.end - t.begin;
    }
  }
  for (const auto& [name, file] : weight_map) {
    auto it = m->where.find(name);
    const std::string expect = path_join(m->dir, file);
    if (it == m->where.end()) fail(index_path, ": tensor '", name, "' listed in weight_map but absent from ", file);
    if (fs::path(m->files[it->second.first]->path()).filename() != fs::path(file).filename())
      fail(index_path, ": tensor '", name, "' listed in ", file, " but stored in ",
           m->files[it->second.first]->path());
  }
  // Aliases: __metadata__ entries "alias" -> "stored tensor" (tied weights saved once).
  for (const auto& f : m->files)
    for (const auto& [k, v] : f->metadata())
      if (!m->where.count(k) && m->where.count(v)) m->aliases[k] = v;

  Checkpoint c;
  c.impl_ = m;
  return c;
}

const std::string& Checkpoint::dir() const { return impl_->dir; }
bool Checkpoint::has_config() const { return impl_->has_config; }
std::string Checkpoint::config_path() const { return path_join(impl_->dir, "config.json"); }
const nlohmann::json& Checkpoint::config_json() const {
  if (!impl_->has_config) fail(config_path(), ": missing (a checkpoint directory needs config.json)");
  return impl_->config;
}
const std::vector<std::string>& Checkpoint::names() const { return impl_->names; }
bool Checkpoint::has(const std::string& n) const { return impl_->where.count(n) || impl_->aliases.count(n); }
bool Checkpoint::is_alias(const std::string& n) const { return impl_->aliases.count(n) > 0; }
const std::map<std::string, std::string>& Checkpoint::aliases() const { return impl_->aliases; }
const std::vector<std::shared_ptr<SafetensorsFile>>& Checkpoint::files() const { return impl_->files; }
uint64_t Checkpoint::total_bytes() const { return impl_->total; }

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto a = impl_->aliases.find(name);
  const std::string& n = a == impl_->aliases.end() ? name : a->second;
  auto it = impl_->where.find(n);
  if (it == impl_->where.end()) fail(impl_->dir, ": tensor '", name, "' not found in the checkpoint");
  return *it->second.second;
}

Tensor Checkpoint::get(const std::string& name) const {
  const TensorInfo& i = info(name);
  return impl_->files[impl_->where.at(i.name).first]->get(i);
}

std::string Checkpoint::file_of(const std::string& name) const {
  const TensorInfo& i = info(name);
  return impl_->files[impl_->where.at(i.name).first]->path();
}

}  // namespace moetool
