// Fixed-width table and CSV output. See table.hpp.
#include "moebench/table.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>

#include "moebench/check.hpp"

namespace moebench {

ResultTable::ResultTable(std::vector<TableColumn> columns) : columns_(std::move(columns)) {}

ResultTable::~ResultTable() {
  if (csv_ != nullptr) std::fclose(csv_);
}

void ResultTable::open_csv(const std::string& path) {
  // Rows go to PATH.partial; close_csv renames it to PATH, so a run that dies never leaves
  // a CSV that looks complete.
  const std::string partial = path + ".partial";
  csv_ = std::fopen(partial.c_str(), "w");
  if (csv_ == nullptr) {
    throw UsageError("cannot write CSV '" + partial + "': " + std::strerror(errno) +
                     " (check the directory of --out)");
  }
  csv_path_ = path;
  for (size_t i = 0; i < columns_.size(); ++i) {
    std::fprintf(csv_, "%s%s", i ? "," : "", columns_[i].name.c_str());
  }
  std::fprintf(csv_, "\n");
}

void ResultTable::print_header(std::FILE* out) const {
  std::fprintf(out, "#");
  for (const TableColumn& column : columns_) {
    std::fprintf(out, " %*s", column.width, column.name.c_str());
  }
  std::fprintf(out, "\n");
}

void ResultTable::add_row(std::FILE* out, const std::vector<double>& values) {
  MOEBENCH_CHECK(values.size() == columns_.size(), "one value per column");
  std::fprintf(out, " ");
  for (size_t i = 0; i < columns_.size(); ++i) {
    const TableColumn& column = columns_[i];
    if (!column.labels.empty()) {
      const auto index = static_cast<size_t>(values[i]);
      MOEBENCH_CHECK(values[i] >= 0 && index < column.labels.size(), "label index out of range");
      const char* label = column.labels[index].c_str();
      std::fprintf(out, " %*s", column.width, label);
      if (csv_ != nullptr) std::fprintf(csv_, "%s%s", i ? "," : "", label);
      continue;
    }
    if (std::isnan(values[i])) {
      std::fprintf(out, " %*s", column.width, "-");
    } else {
      std::fprintf(out, " %*.*f", column.width, column.precision, values[i]);
    }
    if (csv_ != nullptr) {
      if (i) std::fprintf(csv_, ",");
      // Full precision in the CSV; integers without a fraction.
      if (std::isnan(values[i])) {
      } else if (column.precision == 0) {
        std::fprintf(csv_, "%.0f", values[i]);
      } else {
        std::fprintf(csv_, "%.9g", values[i]);
      }
    }
  }
  std::fprintf(out, "\n");
  std::fflush(out);
  if (csv_ != nullptr) {
    std::fprintf(csv_, "\n");
    std::fflush(csv_);
  }
}

void ResultTable::close_csv() {
  if (csv_ == nullptr) return;
  const bool failed = std::fclose(csv_) != 0;
  csv_ = nullptr;
  const std::string partial = csv_path_ + ".partial";
  if (failed || std::rename(partial.c_str(), csv_path_.c_str()) != 0) {
    throw Error("error finishing CSV '" + csv_path_ + "' from '" + partial + "': " +
                std::strerror(errno));
  }
}

std::string csv_path_beside(const std::string& trace_path) {
  const auto slash = trace_path.find_last_of('/');
  const auto dot = trace_path.find_last_of('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) {
    return trace_path.substr(0, dot) + ".csv";
  }
  return trace_path + ".csv";
}

}  // namespace moebench
