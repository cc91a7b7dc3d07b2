// convert/router_init.h — router initialisation for upcycled MoE layers: seeded random rows, zero rows
// (all logits tie, so every token gets equal weights), or mergekit's "hidden" mode from a prompt
// recipe: per layer and expert, the mean residual-stream state entering the layer over the expert's
// positive prompts, minus the mean over its negative prompts, L2-normalised. Recipes are JSON or the
// YAML subset mergekit-moe configs use; the condition number of each layer's router matrix flags
// prompts that are too similar to separate the experts.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/tokenizer.h"
#include "engine/engine.h"

namespace moetool {

enum class RouterInit { Random, Zero, Prompts };
RouterInit parse_router_init(const std::string& s);  // "random" | "zero" | "prompts"
const char* router_init_name(RouterInit r);

struct ExpertPrompts {
  std::vector<std::string> positive, negative;
};
struct PromptRecipe {
  std::vector<ExpertPrompts> experts;
};

// Parses a recipe: {"experts": [{"positive_prompts": [...], "negative_prompts": [...]}, ...]} (other
// keys such as mergekit's source_model are ignored; a bare list of experts is accepted too), as JSON
// or YAML. Throws moetool::Error naming `path` on malformed input or an expert without prompts.
PromptRecipe parse_prompt_recipe(const std::string& text, const std::string& path);
PromptRecipe load_prompt_recipe(const std::string& path);

// The YAML subset of configuration files: block mappings and sequences by indentation ("- key: v"
// items included), plain / 'single' / "double"-quoted scalars, flow sequences of scalars, literal
// (|) and folded (>) block scalars, comments. Anchors, tags, flow mappings and multi-document
// streams are refused with an error naming `path` and the line.
nlohmann::json parse_yaml_subset(const std::string& text, const std::string& path);

// The standard deviation of a random router: the config's initializer_range (HF's init), else 0.02.
double random_router_stdev(const ModelConfig& c);
// Router rows [E, H] ~ N(0, stdev²), seeded per layer (stream "router.<layer>").
std::vector<float> random_router(int64_t E, int64_t H, double stdev, uint64_t seed, int64_t layer);

// mergekit "hidden" routers of every layer: result[l] is [E, H] for E = recipe.experts.size().
// Prompts are tokenised with BOS (when the tokenizer has one); a prompt's state is the mean over its
// tokens after BOS.
std::vector<std::vector<float>> prompt_routers(const Engine& engine, const Tokenizer& tok, const PromptRecipe& recipe,
                                               const std::function<void(const std::string&)>& progress = {});

// σ_max / σ_min of the [E, H] matrix (infinite when rank-deficient or E > H).
double condition_number(const float* rows, int64_t E, int64_t H);

}  // namespace moetool
