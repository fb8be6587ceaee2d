//! Merging evaluators that observed disjoint traces: a scan spread over threads gives each
//! thread an evaluator of its own (no lock per trace) and merges them at the end. The result
//! equals one evaluator that observed every trace, exemplars aside: they stay within the
//! query's limit and two per series and interval, as `observe` keeps them.

use super::*;

impl Evaluator {
    /// Adds what `other` observed. Both must come from [`Evaluator::new`] with the same query
    /// and range; parts of a tree that differ (another query's) are left alone.
    pub fn merge(&mut self, other: Evaluator) {
        self.spans_observed += other.spans_observed;
        self.traces_observed += other.traces_observed;
        merge_node(&mut self.root, other.root, self.exemplar_limit);
    }
}

fn merge_node(into: &mut Node, from: Node, exemplar_limit: u32) {
    match (into, from) {
        (Node::Leaf(into), Node::Leaf(from)) => into.merge(*from, exemplar_limit),
        (
            Node::Binary { lhs, rhs, .. },
            Node::Binary {
                lhs: from_lhs,
                rhs: from_rhs,
                ..
            },
        ) => {
            merge_node(lhs, *from_lhs, exemplar_limit);
            merge_node(rhs, *from_rhs, exemplar_limit);
        }
        (Node::Staged { inner, .. }, Node::Staged { inner: from, .. }) => {
            merge_node(inner, *from, exemplar_limit)
        }
        _ => {}
    }
}

impl Leaf {
    fn merge(&mut self, from: Leaf, exemplar_limit: u32) {
        for (key, mut acc) in from.series {
            let exemplars = std::mem::take(&mut acc.exemplars);
            let into = match self.series.entry(key) {
                std::collections::hash_map::Entry::Vacant(slot) => slot.insert(acc),
                std::collections::hash_map::Entry::Occupied(slot) => {
                    let into = slot.into_mut();
                    into.add(acc);
                    into
                }
            };
            for (interval, exemplar) in exemplars {
                if self.exemplars_taken < exemplar_limit
                    && into
                        .exemplars
                        .iter()
                        .filter(|(i, _)| *i == interval)
                        .count()
                        < 2
                {
                    self.exemplars_taken += 1;
                    into.exemplars.push((interval, exemplar));
                }
            }
        }
        for (key, values) in from.compare.values {
            let into = self.compare.values.entry(key).or_default();
            for (value, counts) in values {
                add_counts(into.entry(value).or_default(), &counts);
            }
        }
        for (key, counts) in from.compare.totals {
            add_counts(self.compare.totals.entry(key).or_default(), &counts);
        }
    }
}

impl Accumulator {
    /// Adds `other`'s figures (its exemplars are merged by the caller).
    fn add(&mut self, other: Accumulator) {
        add_counts(&mut self.count, &other.count);
        add_counts(&mut self.sum, &other.sum);
        for (into, v) in self.min.iter_mut().zip(&other.min) {
            if into.is_nan() || *v < *into {
                *into = *v;
            }
        }
        for (into, v) in self.max.iter_mut().zip(&other.max) {
            if into.is_nan() || *v > *into {
                *into = *v;
            }
        }
        if self.values.is_empty() {
            self.values = other.values;
        } else {
            for (into, values) in self.values.iter_mut().zip(other.values) {
                into.extend(values);
            }
        }
    }
}

/// Adds `from` into `into` element-wise (an empty `into` takes `from`'s length).
fn add_counts(into: &mut Vec<f64>, from: &[f64]) {
    if into.is_empty() {
        into.resize(from.len(), 0.0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}
