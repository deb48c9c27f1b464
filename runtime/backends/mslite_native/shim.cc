// A C ABI over MindSpore Lite 2.0's C++ API (the native library of the mindspore-lite 2.0.0 wheel), so that any
// CPython can drive it through ctypes: the wheel's own Python binding loads only in CPython 3.7.
//
// Built by `python -m runtime.backends.mslite_native setup` (build.py has the flags and why each is needed).
// Every function catches C++ exceptions (some converter errors escape as exceptions and would abort the process)
// and reports failures as a non-zero return plus a message in the caller's buffer.
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/format.h"
#include "include/api/model.h"
#include "include/api/status.h"
#include "include/api/types.h"

namespace mindspore {
namespace converter {
enum FmkType : int { kFmkTypeOnnx = 2 };   // include/registry/converter_context.h (not shipped in the wheel)
}
struct ConverterPara;
// include/converter.h is not shipped; the exported symbols (nm -DC libmindspore_converter.so) give this surface.
// The object holds one shared_ptr (data_); the padding only guards against a larger layout.
class Converter {
 public:
  Converter();
  void SetSaveType(ModelType save_type);
  void SetInputFormat(Format format);
  Status Convert(converter::FmkType fmk, const std::vector<char> &model_file, const std::vector<char> &output_file,
                 const std::vector<char> &weight_file);

 private:
  std::shared_ptr<ConverterPara> data_;
  char reserved_[64] = {};
};
}  // namespace mindspore

namespace {
using mindspore::MSTensor;

void set_error(char *err, size_t len, const std::string &msg) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = '\0';
}

std::vector<char> chars(const char *s) { return std::vector<char>(s, s + std::strlen(s)); }

// A built model and the tensors it owns (input and output handles are fetched once, after Build).
struct Handle {
  mindspore::Model model;
  std::vector<MSTensor> inputs;
  std::vector<MSTensor> outputs;
  std::vector<std::string> input_names;
  std::vector<std::string> output_names;
};

std::vector<MSTensor> &tensors(Handle *h, int is_output) { return is_output ? h->outputs : h->inputs; }

template <typename F>
int guarded(char *err, size_t len, F &&body) {
  try {
    return body();
  } catch (const std::exception &e) {
    set_error(err, len, std::string("C++ exception: ") + e.what());
  } catch (...) {
    set_error(err, len, "unknown C++ exception");
  }
  return -1;
}
}  // namespace

extern "C" {

// ONNX file -> MindSpore Lite model written as out_prefix + ".mindir" (save_type 0) or ".ms" (save_type 4, with
// ".msw" weights beside it above 2 GB). 4-D inputs keep the ONNX graph's NCHW layout (the converter's default for
// .ms is NHWC).
int sv3d_mslite_convert_onnx(const char *onnx_path, const char *out_prefix, int save_type, char *err, size_t len) {
  return guarded(err, len, [&]() {
    mindspore::Converter converter;
    converter.SetSaveType(static_cast<mindspore::ModelType>(save_type));
    converter.SetInputFormat(mindspore::NCHW);
    mindspore::Status st = converter.Convert(mindspore::converter::kFmkTypeOnnx, chars(onnx_path),
                                             chars(out_prefix), std::vector<char>());
    if (!st.IsOk()) {
      set_error(err, len, st.ToString());
      return 1;
    }
    return 0;
  });
}

// Build a MindIR model on the CPU with `threads` threads (0: the engine's default). Returns a handle or null.
void *sv3d_mslite_build(const char *path, int model_type, int threads, char *err, size_t len) {
  Handle *out = nullptr;
  guarded(err, len, [&]() {
    auto context = std::make_shared<mindspore::Context>();
    if (threads > 0) context->SetThreadNum(threads);
    context->MutableDeviceInfo().push_back(std::make_shared<mindspore::CPUDeviceInfo>());
    auto h = std::make_unique<Handle>();
    mindspore::Status st = h->model.Build(std::string(path), static_cast<mindspore::ModelType>(model_type), context);
    if (!st.IsOk()) {
      set_error(err, len, st.ToString());
      return 1;
    }
    h->inputs = h->model.GetInputs();
    h->outputs = h->model.GetOutputs();
    for (auto &t : h->inputs) h->input_names.push_back(t.Name());
    for (auto &t : h->outputs) h->output_names.push_back(t.Name());
    out = h.release();
    return 0;
  });
  return out;
}

void sv3d_mslite_free(void *handle) { delete static_cast<Handle *>(handle); }

int sv3d_mslite_count(void *handle, int is_output) {
  return static_cast<int>(tensors(static_cast<Handle *>(handle), is_output).size());
}

// Name, data type (mindspore::DataType) and shape (up to max_dims) of input/output i; returns the rank.
int sv3d_mslite_describe(void *handle, int is_output, int i, const char **name, int *dtype, int64_t *dims,
                         int max_dims) {
  Handle *h = static_cast<Handle *>(handle);
  const MSTensor &t = tensors(h, is_output)[i];
  *name = (is_output ? h->output_names : h->input_names)[i].c_str();
  *dtype = static_cast<int>(t.DataType());
  const std::vector<int64_t> &shape = t.Shape();
  for (size_t k = 0; k < shape.size() && static_cast<int>(k) < max_dims; ++k) dims[k] = shape[k];
  return static_cast<int>(shape.size());
}

// Copy nbytes into input i (the size must equal the tensor's).
int sv3d_mslite_set_input(void *handle, int i, const void *data, size_t nbytes, char *err, size_t len) {
  return guarded(err, len, [&]() {
    MSTensor &t = static_cast<Handle *>(handle)->inputs[i];
    if (t.DataSize() != nbytes) {
      set_error(err, len, "input " + t.Name() + ": expected " + std::to_string(t.DataSize()) + " bytes, got " +
                              std::to_string(nbytes));
      return 1;
    }
    std::memcpy(t.MutableData(), data, nbytes);
    return 0;
  });
}

int sv3d_mslite_predict(void *handle, char *err, size_t len) {
  return guarded(err, len, [&]() {
    Handle *h = static_cast<Handle *>(handle);
    std::vector<MSTensor> outputs;
    mindspore::Status st = h->model.Predict(h->inputs, &outputs);
    if (!st.IsOk()) {
      set_error(err, len, st.ToString());
      return 1;
    }
    h->outputs = outputs;
    return 0;
  });
}

// Output i's data after predict: a pointer valid until the next predict or free, and its size in bytes.
const void *sv3d_mslite_output_data(void *handle, int i, size_t *nbytes) {
  MSTensor &t = static_cast<Handle *>(handle)->outputs[i];
  *nbytes = t.DataSize();
  return t.Data().get();
}

}  // extern "C"
