// `moebench analyze TRACE...`: reads train, capacity and alltoall traces (rank 0, plain
// read-only HDF5) and writes the summary table of DESIGN §1: one row per training run, one per
// grid cell of a benchmark. The CSV holds every row under one fixed column set (the DESIGN
// columns first); the Markdown, printed on stdout and optionally written to a file, holds one
// table per kind with the columns that apply to it and that one of its rows fills. Column
// definitions: docs/analyze.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moebench {

// argv[0] is "analyze". Returns the exit status; throws UsageError for a missing, foreign,
// wrong-version or unreadable trace and for outputs that cannot be written.
int run_analyze_command(int argc, char** argv);

namespace analyze {

enum class Kind : unsigned { train = 1, capacity = 2, alltoall = 4 };
const char* to_string(Kind kind);

struct Column {
  const char* name;
  unsigned kinds;  // bit set of the Kinds it applies to
  int precision;   // Markdown: digits after the point (0 = integer); -1 = text
};

// The summary columns in CSV order: the DESIGN §1 set, then the extra ones.
const std::vector<Column>& summary_columns();

// One cell: text, or a number (NaN = empty: not defined for this row).
struct Cell {
  std::string text;
  double number = 0.0;
  bool is_number = false;
};

struct SummaryRow {
  explicit SummaryRow(Kind row_kind) : kind(row_kind) {}
  Kind kind;
  std::map<std::string, Cell> cells;  // column name -> cell; absent = empty
  // Both check that `column` exists and applies to this row's kind.
  void set(const std::string& column, const std::string& text);
  void set(const std::string& column, double number);
};

// The summary rows of one trace, read on this process alone (no MPI). Appends one line naming
// the file to `warnings` when the run did not finish (the rows then hold what it had flushed)
// or the trace holds nothing analyze summarizes. UsageError for a missing, foreign,
// wrong-version or malformed file.
std::vector<SummaryRow> summarize_trace(const std::string& path, int64_t window,
                                        std::vector<std::string>& warnings);

// Mean of the values that are not NaN; NaN when there are none.
double defined_mean(const std::vector<double>& values);

// The rows [first, first + count) of a training trace with `steps` complete steps that the
// per-step columns average: the last min(window, steps - 1) steps, so that the first step of
// the trace (allocation, first touch) is left out, or the single step when there is only one.
struct StepWindow {
  int64_t first = 0;
  int64_t count = 0;
};
StepWindow step_window(int64_t steps, int64_t window);

// Cell text. CSV: integers (|x| < 1e15) without a point, other numbers with 12 significant
// digits, NaN empty, text quoted when it holds a comma, quote or newline. Markdown: numbers
// with the column's digits after the point, '|' in text escaped.
std::string csv_number(double value);
std::string csv_text(const std::string& text);
std::string markdown_number(double value, int precision);
std::string markdown_text(const std::string& text);

// The whole CSV file (header + one line per row, in the order given), and the whole Markdown
// document (one "## <kind>" section per kind present, in the order train, capacity, alltoall,
// each a table of that kind's columns that one of its rows fills, and its rows in the order
// given).
std::string render_csv(const std::vector<SummaryRow>& rows);
std::string render_markdown(const std::vector<SummaryRow>& rows);

}  // namespace analyze
}  // namespace moebench
