// Attribute writers for the trace: variable-length UTF-8 strings, string arrays and native
// scalars, each replacing an existing attribute of the same name.
#include <vector>

#include "moebench/check.hpp"
#include "trace_internal.hpp"

namespace moebench::trace_detail {

namespace {

void delete_if_present(hid_t object, const std::string& name) {
  htri_t exists = MOEBENCH_H5_CHECK(H5Aexists(object, name.c_str()));
  if (exists > 0) {
    MOEBENCH_H5_CHECK(H5Adelete(object, name.c_str()));
  }
}

// Creates attribute `name` with `type` over `space` and writes `data` (in memory as `type`).
void create_and_write(hid_t object, const std::string& name, hid_t type, hid_t space,
                      const void* data) {
  delete_if_present(object, name);
  H5Handle attribute(MOEBENCH_H5_CHECK(H5Acreate2(object, name.c_str(), type, space, H5P_DEFAULT,
                                                  H5P_DEFAULT)),
                     H5Aclose);
  MOEBENCH_H5_CHECK(H5Awrite(attribute.get(), type, data));
  MOEBENCH_H5_CHECK(attribute.close());
}

}  // namespace

H5Handle utf8_string_type() {
  H5Handle type(MOEBENCH_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  MOEBENCH_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  MOEBENCH_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  return type;
}

void write_string_attribute(hid_t object, const std::string& name, const std::string& value) {
  H5Handle type = utf8_string_type();
  H5Handle space(MOEBENCH_H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  const char* text = value.c_str();
  create_and_write(object, name, type.get(), space.get(), &text);
}

void write_string_array_attribute(hid_t object, const std::string& name,
                                  const std::vector<std::string>& values) {
  H5Handle type = utf8_string_type();
  const hsize_t count[1] = {static_cast<hsize_t>(values.size())};
  H5Handle space(MOEBENCH_H5_CHECK(H5Screate_simple(1, count, nullptr)), H5Sclose);
  std::vector<const char*> texts;  // [values.size()]
  texts.reserve(values.size());
  for (const std::string& value : values) {
    texts.push_back(value.c_str());
  }
  create_and_write(object, name, type.get(), space.get(), texts.data());
}

void write_scalar_attribute(hid_t object, const std::string& name, hid_t native_type,
                            const void* value) {
  H5Handle space(MOEBENCH_H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  create_and_write(object, name, native_type, space.get(), value);
}

}  // namespace moebench::trace_detail
