// The summary table: its columns, cell formatting, and the CSV and Markdown renderings.
// See analyze.hpp; the meaning of every column is in docs/analyze.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "moebench/analyze.hpp"
#include "moebench/check.hpp"

namespace moebench::analyze {

namespace {

constexpr unsigned T = static_cast<unsigned>(Kind::train);
constexpr unsigned C = static_cast<unsigned>(Kind::capacity);
constexpr unsigned A = static_cast<unsigned>(Kind::alltoall);

const Column* find_column(const std::string& name) {
  for (const Column& column : summary_columns()) {
    if (name == column.name) return &column;
  }
  return nullptr;
}

Cell cell_of(const SummaryRow& row, const char* column) {
  const auto found = row.cells.find(column);
  if (found != row.cells.end()) return found->second;
  Cell empty;
  return empty;
}

// Empty: not set, empty text, or a NaN number (rendered as an empty cell in both formats).
bool is_empty(const Cell& cell) {
  return cell.is_number ? std::isnan(cell.number) : cell.text.empty();
}

}  // namespace

const char* to_string(Kind kind) {
  switch (kind) {
    case Kind::train: return "train";
    case Kind::capacity: return "capacity";
    case Kind::alltoall: return "alltoall";
  }
  return "?";
}

const std::vector<Column>& summary_columns() {
  static const std::vector<Column> columns = {
      // DESIGN §1, in its order.
      {"command", T | C | A, -1},
      {"router", T | C | A, -1},
      {"router_arch", T, -1},
      {"top_k", T | C | A, 0},
      {"experts", T | C | A, 0},
      {"capacity_factor", T | C | A, 2},
      {"ranks", T | C | A, 0},
      {"steps", T, 0},
      {"ppl", T, 3},
      {"bpb", T, 4},
      {"tokens_per_s", T, 0},
      {"drop_rate", T | C | A, 4},
      {"token_drop_rate", T | C, 4},
      {"load_cv", T | C, 3},
      {"gate_entropy", T | C, 3},
      {"router_entropy", T | C, 3},
      {"mean_topk_prob", T | C, 3},
      {"router_params", T, 0},
      {"a2a_bytes_per_step", T | C | A, 0},
      {"a2a_ms_per_step", T | C | A, 3},
      // Extra columns.
      {"max_load_ratio", T | C, 3},
      {"dispatch", T | C | A, -1},
      {"balance", T, -1},
      {"eval_step", T, 0},
      {"capacity", C | A, 0},
      {"pattern", A, -1},
      {"algorithm", A, -1},
      {"size_bytes", A, 0},
      {"algbw_GBps", A, 3},
      {"busbw_GBps", A, 3},
      {"rank_bytes_max", A, 0},
      {"padded_over_ragged", A, 3},
      {"wrong", C | A, 0},
      {"complete", T | C | A, 0},
      {"file", T | C | A, -1},
  };
  return columns;
}

void SummaryRow::set(const std::string& column, const std::string& text) {
  const Column* found = find_column(column);
  MOEBENCH_CHECK(found != nullptr && found->precision < 0, "text column " + column);
  MOEBENCH_CHECK((found->kinds & static_cast<unsigned>(kind)) != 0,
                 column + " applies to " + to_string(kind) + " rows");
  cells[column] = Cell{text, 0.0, false};
}

void SummaryRow::set(const std::string& column, double number) {
  const Column* found = find_column(column);
  MOEBENCH_CHECK(found != nullptr && found->precision >= 0, "number column " + column);
  MOEBENCH_CHECK((found->kinds & static_cast<unsigned>(kind)) != 0,
                 column + " applies to " + to_string(kind) + " rows");
  cells[column] = Cell{"", number, true};
}

double defined_mean(const std::vector<double>& values) {
  double sum = 0.0;
  int64_t count = 0;
  for (double value : values) {
    if (std::isnan(value)) continue;
    sum += value;
    ++count;
  }
  return count > 0 ? sum / static_cast<double>(count) : std::nan("");
}

StepWindow step_window(int64_t steps, int64_t window) {
  MOEBENCH_CHECK(steps >= 0 && window >= 1, "steps >= 0 and window >= 1");
  if (steps <= 1) return {0, steps};
  const int64_t count = std::min(window, steps - 1);
  return {steps - count, count};
}

std::string csv_number(double value) {
  if (std::isnan(value)) return "";
  char buffer[64];
  if (value == std::floor(value) && std::abs(value) < 1e15) {
    std::snprintf(buffer, sizeof buffer, "%.0f", value);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.12g", value);
  }
  return buffer;
}

std::string csv_text(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

std::string markdown_number(double value, int precision) {
  if (std::isnan(value)) return "";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", precision, value);
  return buffer;
}

std::string markdown_text(const std::string& text) {
  std::string escaped;
  for (char c : text) escaped += c == '|' ? std::string("\\|") : std::string(1, c == '\n' ? ' ' : c);
  return escaped;
}

std::string render_csv(const std::vector<SummaryRow>& rows) {
  std::string out;
  for (const Column& column : summary_columns()) {
    out += std::string(out.empty() ? "" : ",") + column.name;
  }
  out += "\n";
  for (const SummaryRow& row : rows) {
    bool first = true;
    for (const Column& column : summary_columns()) {
      const Cell cell = cell_of(row, column.name);
      out += std::string(first ? "" : ",") + (cell.is_number ? csv_number(cell.number) : csv_text(cell.text));
      first = false;
    }
    out += "\n";
  }
  return out;
}

std::string render_markdown(const std::vector<SummaryRow>& rows) {
  std::string out;
  for (Kind kind : {Kind::train, Kind::capacity, Kind::alltoall}) {
    std::vector<const SummaryRow*> of_kind;
    for (const SummaryRow& row : rows) {
      if (row.kind == kind) of_kind.push_back(&row);
    }
    if (of_kind.empty()) continue;
    // The columns of this kind that at least one of its rows fills.
    std::vector<const Column*> columns;
    for (const Column& column : summary_columns()) {
      if ((column.kinds & static_cast<unsigned>(kind)) == 0) continue;
      const bool filled = std::any_of(of_kind.begin(), of_kind.end(), [&](const SummaryRow* row) {
        return !is_empty(cell_of(*row, column.name));
      });
      if (filled) columns.push_back(&column);
    }
    const char* unit = kind == Kind::train ? "training runs" : kind == Kind::capacity ? "grid cells" : "rows";
    if (!out.empty()) out += "\n";
    out.append("## ").append(to_string(kind)).append(" (").append(std::to_string(of_kind.size()));
    out.append(" ").append(unit).append(")\n\n|");
    for (const Column* column : columns) out.append(" ").append(column->name).append(" |");
    out += "\n|";
    for (const Column* column : columns) out += column->precision < 0 ? " --- |" : " ---: |";
    out += "\n";
    for (const SummaryRow* row : of_kind) {
      out += "|";
      for (const Column* column : columns) {
        const Cell cell = cell_of(*row, column->name);
        out.append(" ")
            .append(cell.is_number ? markdown_number(cell.number, column->precision) : markdown_text(cell.text))
            .append(" |");
      }
      out += "\n";
    }
  }
  return out;
}

}  // namespace moebench::analyze
