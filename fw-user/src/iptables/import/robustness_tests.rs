//! The import never panics: the corpus files mutated a few thousand times
//! (bytes flipped, lines cut, duplicated and swapped, words swapped and
//! replaced by words iptables knows) with a fixed-seed xorshift, so every
//! run tries the same cases. Each either imports into a policy fw parses,
//! or fails with diagnostics.

use super::{
    ImportOptions, import,
    tests::{CORPUS, is_v6},
};

/// xorshift64*: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Words that make a mutation land somewhere interesting.
const WORDS: [&str; 40] = [
    "!",
    "-A",
    "-I",
    "-j",
    "-g",
    "-m",
    "-p",
    "-s",
    "-d",
    "-i",
    "-o",
    "--dport",
    "--sport",
    "--syn",
    "--tcp-flags",
    "ALL",
    "NONE",
    "RETURN",
    "ACCEPT",
    "DROP",
    "REJECT",
    "LOG",
    "TCP",
    "allowed",
    "INPUT",
    "OUTPUT",
    "tcp",
    "udp",
    "icmp",
    "0:65535",
    "65535:0",
    "0",
    "1:",
    ":1024",
    "0.0.0.0/0",
    "192.0.2.0/33",
    "::/0",
    "multiport",
    "--limit",
    "\"",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    match rng.below(7) {
        // Flip bytes (the result may not be UTF-8: lossily converted).
        0 => {
            let mut bytes = text.as_bytes().to_vec();
            for _ in 0..=rng.below(4) {
                let i = rng.below(bytes.len());
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        // Truncate anywhere (on a character boundary).
        1 => {
            let mut cut = rng.below(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_string()
        }
        // Drop, duplicate or swap lines.
        2 | 3 => {
            let mut lines: Vec<&str> = text.lines().collect();
            let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
            match rng.below(3) {
                0 if i < lines.len() => {
                    lines.remove(i);
                }
                1 if i < lines.len() => lines.insert(j, lines[i]),
                _ if i < lines.len() && j < lines.len() => lines.swap(i, j),
                _ => {}
            }
            lines.join("\n")
        }
        // Swap two words of the file, or replace one with a known word.
        _ => {
            let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
            for _ in 0..=rng.below(3) {
                let (i, j) = (rng.below(words.len()), rng.below(words.len()));
                if i >= words.len() || j >= words.len() {
                    continue;
                }
                if rng.below(2) == 0 {
                    words.swap(i, j);
                } else {
                    // Keep a line break that ended the word.
                    let tail = if words[i].ends_with('\n') { "\n" } else { "" };
                    words[i] = format!("{}{tail}", WORDS[rng.below(WORDS.len())]);
                }
            }
            words.join(" ")
        }
    }
}

#[test]
fn mutated_corpus_never_panics_and_imports_only_valid_policies() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut imported, mut refused) = (0, 0);
    for case in 0..3000 {
        let (name, original) = CORPUS[case % CORPUS.len()];
        let mut text = original.to_string();
        for _ in 0..=rng.below(3) {
            text = mutate(&mut rng, &text);
        }
        let opts = ImportOptions {
            skip_unsupported: rng.below(2) == 0,
        };
        let v6 = is_v6(name);
        let result = if v6 {
            import(None, Some((name, &text)), &opts)
        } else {
            import(Some((name, &text)), None, &opts)
        };
        match result {
            Ok(i) => {
                imported += 1;
                if let Err(e) = crate::policy::parse(&i.toml, "imported.toml") {
                    panic!(
                        "case {case} ({name}): the import is not a valid policy: {e}\n--- input:\n{text}\n--- output:\n{}",
                        i.toml
                    );
                }
            }
            Err(e) => {
                refused += 1;
                assert!(
                    !e.diagnostics.is_empty(),
                    "case {case}: an error without diagnostics"
                );
                assert!(
                    e.diagnostics
                        .iter()
                        .all(|d| d.file == name && !d.message.is_empty())
                );
            }
        }
    }
    // Both outcomes were exercised.
    assert!(
        imported > 300 && refused > 300,
        "{imported} imported, {refused} refused"
    );
}
