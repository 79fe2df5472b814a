// From one trace to its summary rows: a training run (one row), a capacity grid (one row per
// cell), an alltoall run (one row per size and algorithm of a size sweep, one per cell of a
// cost-per-router table). Definitions: docs/analyze.md.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "moebench/analyze.hpp"
#include "moebench/check.hpp"
#include "moebench/router_net.hpp"
#include "moebench/routing.hpp"
#include "trace_file.hpp"

namespace moebench::analyze {

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Rows that every one of `datasets` holds: a run that died while flushing can leave some
// series a row longer than others.
int64_t common_rows(const TraceFile& trace, const std::vector<std::string>& datasets) {
  int64_t rows = std::numeric_limits<int64_t>::max();
  for (const std::string& dataset : datasets) rows = std::min(rows, trace.shape(dataset)[0]);
  return rows;
}

SummaryRow start_row(Kind kind, const TraceFile& trace, bool complete) {
  SummaryRow row(kind);
  row.set("command", trace.command());
  row.set("ranks", trace.world_size());
  row.set("complete", complete ? 1.0 : 0.0);
  row.set("file", trace.path());
  return row;
}

bool is_complete(const TraceFile& trace, const std::string& group) {
  return trace.number_attribute(group, "complete").value_or(0.0) == 1.0;
}

std::string incomplete(const TraceFile& trace, const std::string& what) {
  return "'" + trace.path() + "' is incomplete (the run did not finish): " + what;
}

// ---- moebench train: one row ------------------------------------------------------------

const char* const kLayerMetrics[] = {"drop_rate", "token_drop_rate", "load_cv", "max_load_ratio",
                                     "gate_entropy", "router_entropy", "mean_topk_prob"};

int64_t router_params(const TraceFile& trace, int moe_layers) {
  if (trace.config("router") == "hash") return 0;  // no learned router
  RouterNetShape shape;
  try {
    shape.arch = parse_router_arch("router-arch", trace.config("router-arch"));
  } catch (const UsageError&) {
    trace.malformed("unknown /config router-arch '" + trace.config("router-arch") + "'");
  }
  shape.d_model = static_cast<int>(trace.config_number("d-model"));
  shape.hidden = static_cast<int>(trace.config_number("router-hidden"));
  shape.num_experts = static_cast<int>(trace.config_number("experts"));
  return moe_layers * router_param_count(shape);
}

// --balance auto resolved the way the trainer resolves it.
std::string effective_balance(const TraceFile& trace) {
  try {
    const RouterKind router = parse_router_kind("router", trace.config("router"));
    return to_string(parse_balance_kind("balance", trace.config("balance"), router));
  } catch (const UsageError&) {
    trace.malformed("unknown /config router '" + trace.config("router") + "' or balance '" +
                    trace.config("balance") + "'");
  }
}

// Adds MoE block `layer`'s all-to-all to the per-step sums over the window: bytes summed over
// sources, phases and destinations; time summed over phases of the slowest rank's time.
void add_exchange(const TraceFile& trace, int layer, const StepWindow& w, std::vector<double>& bytes_per_step,
                  std::vector<double>& exchange_ms_per_step) {
  const std::string comm = "/comm/layer_" + std::to_string(layer) + "/";
  const std::vector<int64_t> bytes_shape = trace.shape(comm + "bytes_sent");  // [steps, P, phases, P]
  const std::vector<int64_t> ms_shape = trace.shape(comm + "exchange_ms");    // [steps, P, phases]
  const int64_t P = trace.world_size();
  if (bytes_shape.size() != 4 || bytes_shape[1] != P || bytes_shape[3] != P || ms_shape.size() != 3 ||
      ms_shape[1] != P || ms_shape[2] != bytes_shape[2]) {
    trace.malformed(comm + "bytes_sent and exchange_ms are not [steps, P, phases, P] and [steps, P, phases]");
  }
  const int64_t phases = ms_shape[2];
  const std::vector<double> bytes = trace.read_rows(comm + "bytes_sent", w.first, w.count);
  const std::vector<double> exchange_ms = trace.read_rows(comm + "exchange_ms", w.first, w.count);
  for (int64_t i = 0; i < w.count; ++i) {
    for (int64_t j = 0; j < P * phases * P; ++j) bytes_per_step[i] += bytes[i * P * phases * P + j];
    for (int64_t phase = 0; phase < phases; ++phase) {
      double slowest = 0.0;
      for (int64_t r = 0; r < P; ++r) slowest = std::max(slowest, exchange_ms[(i * P + r) * phases + phase]);
      exchange_ms_per_step[i] += slowest;
    }
  }
}

std::vector<SummaryRow> summarize_train(const TraceFile& trace, int64_t window,
                                        std::vector<std::string>& warnings) {
  int layers = 0;
  while (trace.exists("/routing/layer_" + std::to_string(layers))) ++layers;
  std::vector<std::string> series = {"/train/step", "/train/tokens_per_s", "/train/ms_per_step"};
  for (int l = 0; l < layers; ++l) {
    for (const char* metric : kLayerMetrics) {
      series.push_back("/routing/layer_" + std::to_string(l) + "/" + metric);
    }
    series.push_back("/comm/layer_" + std::to_string(l) + "/bytes_sent");
    series.push_back("/comm/layer_" + std::to_string(l) + "/exchange_ms");
  }
  // Complete steps: rows every series holds, cut where the step index stops counting up (rows
  // that were extended but never written read as 0).
  int64_t steps = common_rows(trace, series);
  const std::vector<double> step = trace.read_rows("/train/step", 0, steps);
  for (int64_t i = 1; i < steps; ++i) {
    if (step[i] != step[0] + static_cast<double>(i)) steps = i;
  }
  const double steps_reached = steps > 0 ? step[steps - 1] + 1 : kNaN;  // 1-based, as logged

  const bool complete = is_complete(trace, "/train");
  if (!complete && steps == 0) warnings.push_back(incomplete(trace, "it recorded no complete step"));
  if (!complete && steps > 0) {
    warnings.push_back(incomplete(trace, "read up to step " + csv_number(steps_reached) + " (" +
                                             std::to_string(steps) + " steps recorded)"));
  }
  SummaryRow row = start_row(Kind::train, trace, complete);
  row.set("router", trace.config("router"));
  row.set("router_arch", trace.config("router-arch"));
  row.set("top_k", trace.config_number("top-k"));
  row.set("experts", trace.config_number("experts"));
  row.set("capacity_factor", trace.config_number("capacity-factor"));
  row.set("dispatch", trace.config("dispatch"));
  row.set("balance", effective_balance(trace));
  row.set("router_params", static_cast<double>(router_params(trace, layers)));
  row.set("steps", steps_reached);

  // Validation: the last evaluation at or before the last complete step.
  const int64_t evals = common_rows(trace, {"/eval/step", "/eval/ppl", "/eval/bpb"});
  const std::vector<double> eval_step = trace.read_rows("/eval/step", 0, evals);
  for (int64_t j = evals - 1; j >= 0; --j) {
    if (eval_step[j] <= steps_reached) {
      row.set("eval_step", eval_step[j]);
      row.set("ppl", trace.read_rows("/eval/ppl", j, 1)[0]);
      row.set("bpb", trace.read_rows("/eval/bpb", j, 1)[0]);
      break;
    }
  }

  // Per-step columns over the window of the last steps.
  const StepWindow w = step_window(steps, window);
  const std::vector<double> tokens_per_s = trace.read_rows("/train/tokens_per_s", w.first, w.count);
  const std::vector<double> ms_per_step = trace.read_rows("/train/ms_per_step", w.first, w.count);
  double tokens = 0.0, ms = 0.0;
  for (int64_t i = 0; i < w.count; ++i) {
    tokens += tokens_per_s[i] * ms_per_step[i];
    ms += ms_per_step[i];
  }
  row.set("tokens_per_s", w.count > 0 ? tokens / ms : kNaN);

  std::vector<double> bytes_per_step(w.count, 0.0), exchange_ms_per_step(w.count, 0.0);
  for (int l = 0; l < layers; ++l) add_exchange(trace, l, w, bytes_per_step, exchange_ms_per_step);
  row.set("a2a_bytes_per_step", layers > 0 ? defined_mean(bytes_per_step) : kNaN);
  row.set("a2a_ms_per_step", layers > 0 ? defined_mean(exchange_ms_per_step) : kNaN);
  for (const char* metric : kLayerMetrics) {
    std::vector<double> values;
    for (int l = 0; l < layers; ++l) {
      const std::vector<double> layer =
          trace.read_rows("/routing/layer_" + std::to_string(l) + "/" + metric, w.first, w.count);
      values.insert(values.end(), layer.begin(), layer.end());
    }
    row.set(metric, defined_mean(values));
  }
  return {row};
}

// ---- moebench capacity: one row per grid cell --------------------------------------------

std::vector<SummaryRow> summarize_capacity(const TraceFile& trace, std::vector<std::string>& warnings) {
  const std::string group = "/bench/capacity/";
  const char* const copied[] = {"experts", "top_k", "capacity_factor", "capacity", "drop_rate",
                                "token_drop_rate", "load_cv", "max_load_ratio", "gate_entropy",
                                "router_entropy", "mean_topk_prob", "wrong"};
  std::vector<std::string> series = {group + "exchange_ms", group + "bytes_sent"};
  for (const char* name : copied) series.push_back(group + name);
  const int64_t cells = common_rows(trace, series);
  const bool complete = is_complete(trace, "/bench/capacity");
  if (!complete) {
    warnings.push_back(incomplete(trace, "read its " + std::to_string(cells) + " finished grid cells"));
  }

  const int P = trace.world_size();
  const std::vector<int64_t> bytes_shape = trace.shape(group + "bytes_sent");  // [cells, P, P]
  if (bytes_shape.size() != 3 || bytes_shape[1] != P || bytes_shape[2] != P) {
    trace.malformed(group + "bytes_sent does not have the shape [cells, P, P]");
  }
  const std::vector<double> bytes = trace.read_rows(group + "bytes_sent", 0, cells);
  const std::vector<double> exchange_ms = trace.read_rows(group + "exchange_ms", 0, cells);
  std::vector<std::vector<double>> values;
  for (const char* name : copied) values.push_back(trace.read_rows(group + name, 0, cells));
  const std::string router = trace.text_attribute("/bench/capacity", "router").value_or("");
  const std::string dispatch = trace.text_attribute("/bench/capacity", "dispatch").value_or("");

  std::vector<SummaryRow> rows;
  for (int64_t c = 0; c < cells; ++c) {
    SummaryRow row = start_row(Kind::capacity, trace, complete);
    row.set("router", router);
    row.set("dispatch", dispatch);
    for (size_t i = 0; i < values.size(); ++i) row.set(copied[i], values[i][c]);
    double sent = 0.0;
    for (int64_t j = 0; j < static_cast<int64_t>(P) * P; ++j) sent += bytes[c * P * P + j];
    row.set("a2a_bytes_per_step", sent);
    row.set("a2a_ms_per_step", exchange_ms[c]);
    rows.push_back(std::move(row));
  }
  return rows;
}

// ---- moebench alltoall: one row per size and algorithm, or per routed cell ----------------
// /bench/alltoall can hold several tables (the size sweep of --pattern uniform, the
// cost-per-router table of --pattern routed, and others); each one analyze summarizes has a
// function and an entry in kAlltoallTables. Datasets and groups that no entry reads are ignored.

// "0 = alltoallv, 1 = pairwise, 2 = hierarchical" (or the router codes) -> the name of `code`.
std::string code_name(const std::string& codes, double code) {
  std::stringstream stream(codes);
  std::string entry;
  while (std::getline(stream, entry, ',')) {
    const auto equals = entry.find('=');
    if (equals == std::string::npos) continue;
    const std::string number = entry.substr(0, equals), name = entry.substr(equals + 1);
    if (std::strtod(number.c_str(), nullptr) == code) {
      const auto first = name.find_first_not_of(' '), last = name.find_last_not_of(' ');
      return first == std::string::npos ? name : name.substr(first, last - first + 1);
    }
  }
  return "code " + csv_number(code);
}

// The size sweep: size_bytes, algorithm, times, bandwidths, wrong.
std::vector<SummaryRow> alltoall_size_sweep(const TraceFile& trace, bool complete) {
  const std::string group = "/bench/alltoall/";
  const char* const copied[] = {"size_bytes", "algbw_GBps", "busbw_GBps", "wrong"};
  std::vector<std::string> series = {group + "algorithm", group + "time_max_us"};
  for (const char* name : copied) series.push_back(group + name);
  const int64_t n = common_rows(trace, series);
  const std::vector<double> algorithm = trace.read_rows(group + "algorithm", 0, n);
  const std::vector<double> time_max_us = trace.read_rows(group + "time_max_us", 0, n);
  std::vector<std::vector<double>> values;
  for (const char* name : copied) values.push_back(trace.read_rows(group + name, 0, n));
  const std::string codes = trace.text_attribute("/bench/alltoall", "algorithm_codes").value_or("");
  const std::string pattern = trace.text_attribute("/bench/alltoall", "pattern").value_or("");

  std::vector<SummaryRow> rows;
  for (int64_t i = 0; i < n; ++i) {
    SummaryRow row = start_row(Kind::alltoall, trace, complete);
    row.set("pattern", pattern);
    row.set("algorithm", code_name(codes, algorithm[i]));
    for (size_t c = 0; c < values.size(); ++c) row.set(copied[c], values[c][i]);
    row.set("a2a_bytes_per_step", values[0][i] * trace.world_size());
    row.set("a2a_ms_per_step", time_max_us[i] / 1e3);
    rows.push_back(std::move(row));
  }
  return rows;
}

// The cost-per-router table of --pattern routed (/bench/alltoall/routed): one row per cell
// (router x top-k x capacity factor), the Dispatcher's forward traffic and exchange times.
std::vector<SummaryRow> alltoall_routed(const TraceFile& trace, bool complete) {
  const std::string group = "/bench/alltoall/routed";
  const char* const copied[] = {"top_k", "capacity_factor", "capacity", "drop_rate",
                                "rank_bytes_max", "padded_over_ragged", "wrong"};
  std::vector<std::string> series = {group + "/router", group + "/wire_bytes", group + "/dispatch_ms",
                                     group + "/combine_ms"};
  for (const char* name : copied) series.push_back(group + "/" + name);
  const int64_t n = common_rows(trace, series);
  const std::vector<double> router = trace.read_rows(group + "/router", 0, n);
  const std::vector<double> wire_bytes = trace.read_rows(group + "/wire_bytes", 0, n);
  const std::vector<double> dispatch_ms = trace.read_rows(group + "/dispatch_ms", 0, n);
  const std::vector<double> combine_ms = trace.read_rows(group + "/combine_ms", 0, n);
  std::vector<std::vector<double>> values;
  for (const char* name : copied) values.push_back(trace.read_rows(group + "/" + name, 0, n));
  const std::string codes = trace.text_attribute(group, "router_codes").value_or("");
  const std::string dispatch = trace.text_attribute(group, "dispatch").value_or("");
  const double experts = trace.number_attribute(group, "experts").value_or(kNaN);
  const std::string pattern = trace.text_attribute("/bench/alltoall", "pattern").value_or("");

  std::vector<SummaryRow> rows;
  for (int64_t i = 0; i < n; ++i) {
    SummaryRow row = start_row(Kind::alltoall, trace, complete);
    row.set("pattern", pattern);
    row.set("router", code_name(codes, router[i]));
    row.set("experts", experts);
    row.set("dispatch", dispatch);
    for (size_t c = 0; c < values.size(); ++c) row.set(copied[c], values[c][i]);
    row.set("a2a_bytes_per_step", wire_bytes[i]);
    row.set("a2a_ms_per_step", dispatch_ms[i] + combine_ms[i]);
    rows.push_back(std::move(row));
  }
  return rows;
}

struct AlltoallTable {
  const char* present_when;  // the table is in the trace when this dataset is
  std::vector<SummaryRow> (*summarize)(const TraceFile& trace, bool complete);
};
const AlltoallTable kAlltoallTables[] = {{"/bench/alltoall/size_bytes", alltoall_size_sweep},
                                         {"/bench/alltoall/routed/router", alltoall_routed}};

std::vector<SummaryRow> summarize_alltoall(const TraceFile& trace, std::vector<std::string>& warnings) {
  const bool complete = is_complete(trace, "/bench/alltoall");
  std::vector<SummaryRow> rows;
  bool found = false;
  for (const AlltoallTable& table : kAlltoallTables) {
    if (!trace.exists(table.present_when)) continue;
    found = true;
    const std::vector<SummaryRow> table_rows = table.summarize(trace, complete);
    rows.insert(rows.end(), table_rows.begin(), table_rows.end());
  }
  if (!found) {
    const std::string pattern = trace.text_attribute("/bench/alltoall", "pattern").value_or("?");
    warnings.push_back("'" + trace.path() + "' (alltoall --pattern " + pattern +
                       ") holds no table that analyze summarizes (it reads the size sweep of "
                       "--pattern uniform and the cost-per-router table of --pattern routed); no "
                       "rows from it");
  } else if (!complete) {
    warnings.push_back(incomplete(trace, "read its " + std::to_string(rows.size()) + " finished rows"));
  }
  return rows;
}

}  // namespace

std::vector<SummaryRow> summarize_trace(const std::string& path, int64_t window,
                                        std::vector<std::string>& warnings) {
  const TraceFile trace(path);
  if (trace.command() == "train") return summarize_train(trace, window, warnings);
  if (trace.command() == "capacity") return summarize_capacity(trace, warnings);
  if (trace.command() == "alltoall") return summarize_alltoall(trace, warnings);
  throw UsageError("'" + path + "' is a trace of 'moebench " + trace.command() +
                   "', which analyze does not summarize (it reads train, capacity and alltoall traces)");
}

}  // namespace moebench::analyze
