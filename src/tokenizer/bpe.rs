//! Byte-pair merging of one pre-token: the reference's rule (repeatedly merge the lowest-ranked
//! adjacent pair, all its occurrences left to right) computed in O(n log n) with a min-heap of
//! (rank, position) over a linked list of symbols. Equal ranks pop left to right, which is the
//! reference's left-to-right pass; this equals the reference because the vocabulary's merges are
//! monotone (checked at load: every pair a merge creates ranks after it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Tokenizer;

/// One BPE merge: rank (lower merges first) and the id of the merged symbol.
#[derive(Clone, Copy, Debug)]
pub(super) struct Merge {
    pub(super) rank: u32,
    pub(super) merged: u32,
}

impl Tokenizer {
    /// BPE of one pre-token (its UTF-8 bytes); appends the ids to `out`.
    pub(super) fn bpe_word(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let Some((&last, init)) = bytes.split_last() else {
            return;
        };
        let mut word: Vec<u32> = Vec::with_capacity(bytes.len());
        word.extend(init.iter().map(|&b| self.byte_id[b as usize]));
        word.push(self.byte_id_final[last as usize]);
        if word.len() > 1 {
            self.merge_with_heap(&mut word);
        }
        out.extend_from_slice(&word);
    }

    pub(super) fn merge_rank(&self, a: u32, b: u32) -> Option<Merge> {
        self.merges.get(&(a, b)).copied()
    }

    /// The reference's merging for monotone merges, in O(n log n): a min-heap of
    /// (rank, position) over a linked list of symbols. Equal ranks pop left to right, which is the
    /// reference's left-to-right pass, and pairs created by a merge always rank after it.
    pub(super) fn merge_with_heap(&self, word: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = word.len();
        let mut sym = word.clone();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
        let mut alive = vec![true; n];
        // (rank, left position, left symbol, right symbol)
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        for i in 0..n.saturating_sub(1) {
            if let Some(m) = self.merge_rank(sym[i], sym[i + 1]) {
                heap.push(Reverse((m.rank, i, sym[i], sym[i + 1])));
            }
        }
        while let Some(Reverse((_, i, left, right))) = heap.pop() {
            // Stale entry? (A node's symbol only grows, so equal symbols mean the pair is intact.)
            if !alive[i] || sym[i] != left {
                continue;
            }
            let j = next[i];
            if j == NONE || sym[j] != right {
                continue;
            }
            let Some(m) = self.merge_rank(left, right) else {
                continue;
            };
            sym[i] = m.merged;
            alive[j] = false;
            let k = next[j];
            next[i] = k;
            if k != NONE {
                prev[k] = i;
                if let Some(mk) = self.merge_rank(sym[i], sym[k]) {
                    heap.push(Reverse((mk.rank, i, sym[i], sym[k])));
                }
            }
            let p = prev[i];
            if p != NONE {
                if let Some(mp) = self.merge_rank(sym[p], sym[i]) {
                    heap.push(Reverse((mp.rank, p, sym[p], sym[i])));
                }
            }
        }
        word.clear();
        let mut i = 0;
        while i != NONE && i < n {
            word.push(sym[i]);
            i = next[i];
        }
    }
}
