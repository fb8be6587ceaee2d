//! Structural operators between spansets (`>`, `>>`, `<`, `<<`, `~`, their union `&…` and
//! negated `!…` forms): which spans of each side a relation keeps.

use super::*;

fn mask(n: usize, spans: &[usize]) -> Vec<bool> {
    let mut m = vec![false; n];
    for &s in spans {
        m[s] = true;
    }
    m
}

fn union(a: &[usize], b: &[usize]) -> Spans {
    let mut all: Spans = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

pub(super) fn structural(
    ctx: &TraceContext<'_>,
    op: SpansetOp,
    left: &[usize],
    right: &[usize],
) -> Spans {
    use SpansetOp::*;
    let n = ctx.trace.spans.len();
    match op {
        And if left.is_empty() || right.is_empty() => return Vec::new(),
        And | Or => return union(left, right),
        _ => {}
    }
    if right.is_empty() {
        return Vec::new();
    }
    let in_left = mask(n, left);
    let in_right = mask(n, right);
    let sibling_of = |span: usize, others: &[bool]| {
        ctx.parent(span).is_some_and(|p| {
            ctx.tree().children[p]
                .iter()
                .any(|&c| c != span && others[c])
        })
    };
    let keep = |pred: &dyn Fn(usize) -> bool| right.iter().copied().filter(|&r| pred(r)).collect();
    // For the union forms: the left-hand spans on the other end of the relation.
    let partners = |pred: &dyn Fn(usize) -> bool| -> Spans {
        left.iter().copied().filter(|&l| pred(l)).collect()
    };
    let is_parent_of_left = |r: usize| ctx.tree().children[r].iter().any(|&c| in_left[c]);
    let is_ancestor_of_left = |r: usize| left.iter().any(|&l| ctx.ancestors(l).any(|a| a == r));
    match op {
        Child => keep(&|r| ctx.parent(r).is_some_and(|p| in_left[p])),
        NotChild => keep(&|r| !ctx.parent(r).is_some_and(|p| in_left[p])),
        UnionChild => {
            let children: Spans = keep(&|r| ctx.parent(r).is_some_and(|p| in_left[p]));
            let parents = partners(&|l| ctx.tree().children[l].iter().any(|&c| in_right[c]));
            union(&children, &parents)
        }
        Parent => keep(&is_parent_of_left),
        NotParent => keep(&|r| !is_parent_of_left(r)),
        UnionParent => {
            let parents: Spans = keep(&is_parent_of_left);
            let children = partners(&|l| ctx.parent(l).is_some_and(|p| in_right[p]));
            union(&parents, &children)
        }
        Descendant => keep(&|r| ctx.ancestors(r).any(|a| in_left[a])),
        NotDescendant => keep(&|r| !ctx.ancestors(r).any(|a| in_left[a])),
        UnionDescendant => {
            let descendants: Spans = keep(&|r| ctx.ancestors(r).any(|a| in_left[a]));
            let mut ancestors = vec![false; n];
            for &d in &descendants {
                for a in ctx.ancestors(d) {
                    ancestors[a] = true;
                }
            }
            let ancestors = partners(&|l| ancestors[l]);
            union(&descendants, &ancestors)
        }
        Ancestor => keep(&is_ancestor_of_left),
        NotAncestor => keep(&|r| !is_ancestor_of_left(r)),
        UnionAncestor => {
            let ancestors: Spans = keep(&is_ancestor_of_left);
            let descendants = partners(&|l| ctx.ancestors(l).any(|a| in_right[a]));
            union(&ancestors, &descendants)
        }
        Sibling => keep(&|r| sibling_of(r, &in_left)),
        NotSibling => keep(&|r| !sibling_of(r, &in_left)),
        UnionSibling => {
            let rights: Spans = keep(&|r| sibling_of(r, &in_left));
            let lefts = partners(&|l| sibling_of(l, &in_right));
            union(&rights, &lefts)
        }
        And | Or => Vec::new(),
    }
}
