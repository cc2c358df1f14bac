//! Linearizability of one object's history under a model: is there an order
//! of the operations, consistent with real time (an operation that returned
//! before another was invoked comes first), in which every operation's answer
//! is what the model gives? Wing and Gong's search with Lowe's memoisation of
//! (operations linearized, state), as Porcupine implements it. A model may
//! be non-deterministic (an operation whose outcome is unknown may or may not
//! have taken effect), so a step gives every state it may lead to.
//!
//! **An operation that never returned may take effect at any time after its
//! invocation, or never (the model says which of its states are possible).**

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use crate::Operation;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    fn init(&self) -> Self::State;

    /// The states `state` may become when `input` is answered `output`;
    /// empty when that answer is impossible in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Vec<Self::State>;
}

/// The answer of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the answers.
    Illegal,
    /// The search gave up after its step budget (say so; never a pass).
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    time: u64,
    /// The index of the matching call/return entry.
    pair: usize,
}

/// A doubly linked list over the entries (index 0 is the head), from which
/// a linearized call and its return are lifted and put back in LIFO order.
struct Events {
    e: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
}

const NIL: usize = usize::MAX;

impl Events {
    fn new<I, O>(ops: &[Operation<I, O>]) -> Events {
        let mut list: Vec<Entry> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            list.push(Entry {
                op: i,
                call: true,
                time: o.call,
                pair: 0,
            });
            list.push(Entry {
                op: i,
                call: false,
                time: o.ret.unwrap_or(u64::MAX),
                pair: 0,
            });
        }
        // By time; at one instant calls first (they overlap what returns then).
        list.sort_by_key(|x| (x.time, !x.call));
        let mut e = vec![Entry {
            op: NIL,
            call: false,
            time: 0,
            pair: 0,
        }];
        e.extend(list);
        let mut call_at = vec![0; ops.len()];
        for i in 1..e.len() {
            if e[i].call {
                call_at[e[i].op] = i;
            }
        }
        for i in 1..e.len() {
            if !e[i].call {
                let c = call_at[e[i].op];
                e[i].pair = c;
                e[c].pair = i;
            }
        }
        let n = e.len();
        let next = (0..n)
            .map(|i| if i + 1 < n { i + 1 } else { NIL })
            .collect();
        let prev = (0..n).map(|i| if i == 0 { NIL } else { i - 1 }).collect();
        Events { e, next, prev }
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != NIL {
            self.prev[n] = i;
        }
    }

    /// Take a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.e[call].pair);
    }

    /// Put them back (the reverse of the last `lift`).
    fn unlift(&mut self, call: usize) {
        self.relink(self.e[call].pair);
        self.relink(call);
    }
}

/// The states the object may be in (a non-deterministic model searched as a
/// deterministic one over sets of states, as Porcupine does).
type States<S> = Vec<S>;

fn step_all<M: Model>(
    model: &M,
    states: &States<M::State>,
    input: &M::Input,
    output: &M::Output,
) -> States<M::State> {
    let mut out: Vec<M::State> = Vec::new();
    for s in states {
        for n in model.step(s, input, output) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Check one history (one object's operations) against `model`, giving up
/// after `budget` search steps.
pub fn check<M: Model>(model: &M, ops: &[Operation<M::Input, M::Output>], budget: u64) -> Verdict {
    let mut ev = Events::new(ops);
    // The linearized operations, one bit each.
    let mut done = vec![0u64; ops.len().div_ceil(64)];
    let flip = |done: &mut Vec<u64>, op: usize| done[op / 64] ^= 1 << (op % 64);
    let mut seen: HashSet<(Vec<u64>, States<M::State>)> = HashSet::new();
    // The linearized calls, each with the states before it.
    let mut stack: Vec<(usize, States<M::State>)> = Vec::new();
    let mut states: States<M::State> = vec![model.init()];
    let mut at = ev.next[0];
    let mut steps = 0u64;
    while ev.next[0] != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown;
        }
        let entry = ev.e[at];
        if entry.call {
            let o = &ops[entry.op];
            let next = step_all(model, &states, &o.input, &o.output);
            if !next.is_empty() {
                flip(&mut done, entry.op);
                if seen.insert((done.clone(), next.clone())) {
                    stack.push((at, std::mem::replace(&mut states, next)));
                    ev.lift(at);
                    at = ev.next[0];
                    continue;
                }
                flip(&mut done, entry.op);
            }
            at = ev.next[at];
        } else {
            // The first pending return: its operation had to be linearized
            // by now, and no choice so far allows it: undo the last one.
            let Some((call, before)) = stack.pop() else {
                return Verdict::Illegal;
            };
            states = before;
            flip(&mut done, ev.e[call].op);
            ev.unlift(call);
            at = ev.next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: write(v) / read() -> v.
    struct Register;

    #[derive(Debug, Clone, PartialEq)]
    enum In {
        Write(u32),
        Read,
    }

    impl Model for Register {
        type State = u32;
        type Input = In;
        type Output = Option<u32>;
        fn init(&self) -> u32 {
            0
        }
        fn step(&self, s: &u32, i: &In, o: &Option<u32>) -> Vec<u32> {
            match (i, o) {
                (In::Write(v), _) => vec![*v],
                (In::Read, Some(v)) if v == s => vec![*s],
                _ => vec![],
            }
        }
    }

    fn op(
        client: usize,
        call: u64,
        ret: u64,
        input: In,
        output: Option<u32>,
    ) -> Operation<In, Option<u32>> {
        Operation {
            client,
            call,
            ret: Some(ret),
            input,
            output,
        }
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        // write(1) overlaps both reads: one sees 0, one sees 1. Fine in one
        // order only if the 0-read comes first.
        let h = vec![
            op(0, 0, 10, In::Write(1), None),
            op(1, 1, 4, In::Read, Some(0)),
            op(2, 5, 9, In::Read, Some(1)),
        ];
        assert_eq!(check(&Register, &h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            op(0, 0, 2, In::Write(1), None),
            op(1, 3, 4, In::Read, Some(0)),
        ];
        assert_eq!(check(&Register, &h, 10_000), Verdict::Illegal);
        // Reads going backwards: 1 then 0 after write(1) completed... and
        // with the write still open, 1 then 0 is impossible as well.
        let h = vec![
            op(0, 0, 100, In::Write(1), None),
            op(1, 1, 2, In::Read, Some(1)),
            op(2, 3, 4, In::Read, Some(0)),
        ];
        assert_eq!(check(&Register, &h, 10_000), Verdict::Illegal);
    }

    #[test]
    fn an_operation_without_an_answer_may_take_effect_late_or_never() {
        let pending = |input| Operation {
            client: 0,
            call: 0,
            ret: None,
            input,
            output: None,
        };
        let h = vec![
            pending(In::Write(7)),
            op(1, 10, 11, In::Read, Some(0)),
            op(1, 20, 21, In::Read, Some(7)),
        ];
        assert_eq!(check(&Register, &h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn the_budget_is_reported_not_passed() {
        let h: Vec<_> = (0..12)
            .map(|i| op(i, 0, 100, In::Write(i as u32), None))
            .chain([op(99, 200, 201, In::Read, Some(99))])
            .collect();
        assert_eq!(check(&Register, &h, 50), Verdict::Unknown);
        assert_eq!(check(&Register, &h, 10_000_000), Verdict::Illegal);
    }
}
