// One place that reports benchmark results: a fixed-width table on stdout and the same rows
// as CSV (nccl-tests style: measuring is separate from reporting). Rank 0 only.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace moebench {

struct TableColumn {
  std::string name;    // CSV header and table header
  int width;           // table width in characters
  int precision;       // digits after the point (0 = integer)
  // When given, the column is categorical: its value is an index into `labels`, printed (and
  // written to the CSV) as that label.
  std::vector<std::string> labels = {};
};

class ResultTable {
 public:
  explicit ResultTable(std::vector<TableColumn> columns);
  ~ResultTable();
  ResultTable(const ResultTable&) = delete;
  ResultTable& operator=(const ResultTable&) = delete;

  // Opens `path`.partial for the CSV copy (truncates) and writes its header; close_csv()
  // renames it to `path`. Throws UsageError naming the path when it cannot be written.
  void open_csv(const std::string& path);
  void print_header(std::FILE* out) const;
  // One value per column; NaN prints as "-" in the table and as an empty CSV field.
  void add_row(std::FILE* out, const std::vector<double>& values);
  void close_csv();

 private:
  std::vector<TableColumn> columns_;
  std::FILE* csv_ = nullptr;
  std::string csv_path_;
};

// "results/run.h5" -> "results/run.csv" (the extension replaced, or ".csv" appended).
std::string csv_path_beside(const std::string& trace_path);

}  // namespace moebench
