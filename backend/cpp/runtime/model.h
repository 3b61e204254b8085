/* C API of a model compiled by `llmopt --emit=cpp` (batch 1, f32 activations). */
#ifndef LLMOPT_MODEL_H
#define LLMOPT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llmopt_model llmopt_model;
typedef struct llmopt_state llmopt_state;

enum { LLMOPT_F32 = 1, LLMOPT_I64 = 7 }; /* ONNX TensorProto data types */

/* A tensor the caller owns. */
typedef struct llmopt_tensor {
  int dtype;
  int rank;
  int64_t shape[8];
  void *data;
} llmopt_tensor;

/* Maps weights.bin (read-only, shared pages); NULL on error (see llmopt_last_error). */
llmopt_model *llmopt_model_load(const char *weights_path);
void llmopt_model_free(llmopt_model *model);
/* The message of the last failed call on this thread ("" if none). */
const char *llmopt_last_error(void);

/* Number of graph inputs/outputs and the width (last dim) of output i; output 0 is the
 * logits of a decoder. */
size_t llmopt_model_num_outputs(const llmopt_model *model);
int64_t llmopt_model_output_cols(const llmopt_model *model, size_t i);
const char *llmopt_model_output_name(const llmopt_model *model, size_t i);
/* Positions the rotary tables cover (the most tokens a state can hold). */
int64_t llmopt_model_max_positions(const llmopt_model *model);

/* Runs the whole graph once: inputs[0] is i64 [1, S] (or [S]) token ids; outputs[i] must be
 * f32 with S * output_cols(i) elements ([1, S, C]). Returns 0, or -1 (llmopt_last_error). */
int llmopt_model_run(llmopt_model *model, const llmopt_tensor *inputs, size_t n_in,
                     llmopt_tensor *outputs, size_t n_out);

/* Decoding step by step: a KV cache for up to max_tokens positions. */
llmopt_state *llmopt_state_new(llmopt_model *model, size_t max_tokens);
void llmopt_state_free(llmopt_state *state);
void llmopt_state_reset(llmopt_state *state);
/* Tokens the cache holds. */
size_t llmopt_state_length(const llmopt_state *state);
/* Appends n tokens at positions length .. length+n-1. logits (may be NULL): n rows of
 * output 0. Returns 0 or -1. */
int llmopt_decode(llmopt_state *state, const int64_t *ids, size_t n, float *logits);
/* The same, writing only the last token's row of output 0 (may be NULL). */
int llmopt_decode_last(llmopt_state *state, const int64_t *ids, size_t n, float *logits);

/* Kernel threads (default: hardware concurrency). */
void llmopt_set_num_threads(int n);
/* 4: int8 activations per block (ORT accuracy_level 4); 0: f32 compute. Default: the
 * value given at compile time; the environment variable LLMOPT_ACCURACY_LEVEL overrides. */
void llmopt_model_set_accuracy_level(llmopt_model *model, int level);

#ifdef __cplusplus
}
#endif
#endif
