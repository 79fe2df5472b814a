// The pure parts of `moebench analyze`: averaging, the step window, cell formatting and the
// CSV / Markdown renderings. Reading real traces is tested through the binary
// (tests/cli/analyze_run.sh).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "moebench/analyze.hpp"
#include "moebench/check.hpp"

namespace moebench::analyze {
namespace {

const double kNaN = std::nan("");

TEST(DefinedMean, SkipsNaNAndIsNaNWhenNothingIsDefined) {
  EXPECT_DOUBLE_EQ(defined_mean({1.0, 2.0, kNaN, 6.0}), 3.0);
  EXPECT_DOUBLE_EQ(defined_mean({0.25}), 0.25);
  EXPECT_TRUE(std::isnan(defined_mean({kNaN, kNaN})));
  EXPECT_TRUE(std::isnan(defined_mean({})));
}

TEST(StepWindow, LastStepsWithoutTheFirstUnlessItIsTheOnlyOne) {
  const auto window = [](int64_t steps, int64_t n) {
    const StepWindow w = step_window(steps, n);
    return std::vector<int64_t>{w.first, w.count};
  };
  EXPECT_EQ(window(0, 100), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(window(1, 100), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(window(2, 100), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(window(8, 100), (std::vector<int64_t>{1, 7}));
  EXPECT_EQ(window(8, 3), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(window(300, 100), (std::vector<int64_t>{200, 100}));
  EXPECT_THROW(step_window(8, 0), Error);
}

TEST(Format, CsvNumbersIntegersExactlyOthersToTwelveDigits) {
  EXPECT_EQ(csv_number(3.0), "3");
  EXPECT_EQ(csv_number(-2.0), "-2");
  EXPECT_EQ(csv_number(0.0), "0");
  EXPECT_EQ(csv_number(123456789012.0), "123456789012");
  EXPECT_EQ(csv_number(0.5), "0.5");
  EXPECT_EQ(csv_number(1.0 / 3.0), "0.333333333333");
  EXPECT_EQ(csv_number(2.5e15 + 0.5), "2.5e+15");
  EXPECT_EQ(csv_number(kNaN), "");
}

TEST(Format, CsvTextQuotedOnlyWhenNeeded) {
  EXPECT_EQ(csv_text("softk"), "softk");
  EXPECT_EQ(csv_text("runs/a,b.h5"), "\"runs/a,b.h5\"");
  EXPECT_EQ(csv_text("say \"hi\""), "\"say \"\"hi\"\"\"");
}

TEST(Format, MarkdownCells) {
  EXPECT_EQ(markdown_number(1.23456, 3), "1.235");
  EXPECT_EQ(markdown_number(13205.6, 0), "13206");
  EXPECT_EQ(markdown_number(kNaN, 3), "");
  EXPECT_EQ(markdown_text("a|b"), "a\\|b");
  EXPECT_EQ(markdown_text("two\nlines"), "two lines");
}

TEST(SummaryRow, RefusesColumnsOfAnotherKindOrType) {
  SummaryRow row(Kind::alltoall);
  row.set("algorithm", "pairwise");
  row.set("size_bytes", 4096.0);
  row.set("router", "softk");           // routed cells
  row.set("capacity", 8.0);
  row.set("rank_bytes_max", 512.0);
  EXPECT_THROW(row.set("load_cv", 0.5), Error);  // train and capacity only
  SummaryRow capacity(Kind::capacity);
  EXPECT_THROW(capacity.set("padded_over_ragged", 1.5), Error);  // alltoall only
  EXPECT_THROW(row.set("ppl", 2.0), Error);          // a train column
  EXPECT_THROW(row.set("size_bytes", "big"), Error);  // a number column
  EXPECT_THROW(row.set("no_such_column", 1.0), Error);
}

std::vector<SummaryRow> example_rows() {
  SummaryRow alltoall(Kind::alltoall);
  alltoall.set("command", "alltoall");
  alltoall.set("algorithm", "pairwise");
  alltoall.set("a2a_ms_per_step", 0.0126);
  SummaryRow train(Kind::train);
  train.set("command", "train");
  train.set("router", "softk");
  train.set("ppl", 3.14159);
  train.set("router_entropy", kNaN);
  train.set("file", "runs/x,y.h5");
  return {alltoall, train};
}

// One CSV line with `cells` in their columns and every other field empty.
std::string csv_line(const std::map<std::string, std::string>& cells) {
  std::string line;
  for (const Column& column : summary_columns()) {
    if (column.name != summary_columns().front().name) line += ",";
    const auto found = cells.find(column.name);
    if (found != cells.end()) line += found->second;
  }
  return line + "\n";
}

TEST(Render, CsvHasEveryColumnForEveryRowInTheOrderGiven) {
  const std::string csv = render_csv(example_rows());
  std::string header;
  for (const Column& column : summary_columns()) header.append(header.empty() ? "" : ",").append(column.name);
  EXPECT_EQ(header.rfind("command,router,router_arch,top_k,experts,capacity_factor,ranks,steps,ppl,bpb,"
                         "tokens_per_s,drop_rate,token_drop_rate,load_cv,gate_entropy,router_entropy,"
                         "mean_topk_prob,router_params,a2a_bytes_per_step,a2a_ms_per_step,", 0),
            0u);
  EXPECT_EQ(csv, header + "\n" +
                     csv_line({{"command", "alltoall"}, {"algorithm", "pairwise"}, {"a2a_ms_per_step", "0.0126"}}) +
                     csv_line({{"command", "train"}, {"router", "softk"}, {"ppl", "3.14159"},
                               {"file", "\"runs/x,y.h5\""}}));
}

TEST(Render, MarkdownOneTablePerKindWithItsFilledColumns) {
  const std::string markdown = render_markdown(example_rows());
  // train first whatever the input order; each section only has the columns of its kind that
  // one of its rows fills (router_entropy is NaN, router_arch unset: both left out).
  const size_t train = markdown.find("## train (1 training runs)");
  const size_t alltoall = markdown.find("## alltoall (1 rows)");
  ASSERT_NE(train, std::string::npos);
  ASSERT_NE(alltoall, std::string::npos);
  EXPECT_LT(train, alltoall);
  EXPECT_EQ(markdown.find("## capacity"), std::string::npos);
  const std::string train_table = markdown.substr(train, alltoall - train);
  EXPECT_EQ(train_table,
            "## train (1 training runs)\n\n"
            "| command | router | ppl | file |\n"
            "| --- | --- | ---: | --- |\n"
            "| train | softk | 3.142 | runs/x,y.h5 |\n\n");
  EXPECT_EQ(markdown.substr(alltoall),
            "## alltoall (1 rows)\n\n"
            "| command | a2a_ms_per_step | algorithm |\n"
            "| --- | ---: | --- |\n"
            "| alltoall | 0.013 | pairwise |\n");
  EXPECT_EQ(render_markdown({}), "");
}

TEST(Render, MarkdownLeavesOutColumnsEmptyInEveryRowOfTheKind) {
  // A size-sweep row and a routed row: the alltoall table has the columns either fills.
  SummaryRow sweep(Kind::alltoall);
  sweep.set("command", "alltoall");
  sweep.set("pattern", "uniform");
  sweep.set("algorithm", "pairwise");
  sweep.set("size_bytes", 1024.0);
  sweep.set("padded_over_ragged", kNaN);  // NaN in every row: left out
  sweep.set("dispatch", "");              // empty text in every row: left out
  SummaryRow routed(Kind::alltoall);
  routed.set("command", "alltoall");
  routed.set("pattern", "routed");
  routed.set("router", "softk");
  routed.set("top_k", 2.0);
  routed.set("padded_over_ragged", kNaN);
  // A capacity row filling `capacity` does not bring it into the alltoall table.
  SummaryRow cell(Kind::capacity);
  cell.set("command", "capacity");
  cell.set("capacity", 16.0);
  EXPECT_EQ(render_markdown({sweep, routed, cell}),
            "## capacity (1 grid cells)\n\n"
            "| command | capacity |\n"
            "| --- | ---: |\n"
            "| capacity | 16 |\n"
            "\n"
            "## alltoall (2 rows)\n\n"
            "| command | router | top_k | pattern | algorithm | size_bytes |\n"
            "| --- | --- | ---: | --- | --- | ---: |\n"
            "| alltoall |  |  | uniform | pairwise | 1024 |\n"
            "| alltoall | softk | 2 | routed |  |  |\n");
  // The sweep alone: no router columns.
  EXPECT_EQ(render_markdown({sweep}),
            "## alltoall (1 rows)\n\n"
            "| command | pattern | algorithm | size_bytes |\n"
            "| --- | --- | --- | ---: |\n"
            "| alltoall | uniform | pairwise | 1024 |\n");
  // The CSV keeps every column.
  EXPECT_NE(render_csv({sweep}).find("padded_over_ragged"), std::string::npos);
}

}  // namespace
}  // namespace moebench::analyze
