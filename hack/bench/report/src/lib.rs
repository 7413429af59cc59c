//! berth-bench-report: turns the results of hack/bench's scripts (JSON
//! Lines, see hack/bench/results.sh) and hack/bench/all's machine facts into
//! docs/benchmarks.md and the chart it shows.

pub mod chart;
pub mod markdown;
pub mod results;
