//! Database maintenance, pure: the `maintenance.defrag_when` rule (a small expression language),
//! the `maintenance.window`, which members to defragment in which order, and what to do about
//! the NOSPACE alarm. Tested by tables.
//!
//! The etcd rules relied on:
//! - compaction only marks old revisions free inside the bbolt file; the file shrinks only when
//!   the member is defragmented, which rewrites it and blocks that member's reads and writes
//!   while it runs: one member at a time, only while every member is healthy (the others keep
//!   the quorum), followers first and the leader last, after leadership has moved away (a
//!   defragmenting leader stalls the whole cluster, not only its own clients);
//! - `free` = dbSize - dbSizeInUse is what a defrag gives back; `quota_used` = dbSize / quota,
//!   where the quota is `--quota-backend-bytes` (etcd's default 2 GiB);
//! - when a member's dbSize reaches the quota etcd raises the NOSPACE alarm and refuses every
//!   write until the alarm is disarmed; disarming while a member is still over the quota raises
//!   it again at once, so it is disarmed only once every member is below 90% of it.

use serde::Serialize;
use std::fmt;

/// etcd's `--quota-backend-bytes` when it is not set.
pub(crate) const DEFAULT_QUOTA: u64 = 2 * 1024 * 1024 * 1024;

/// The NOSPACE alarm is disarmed once every member's dbSize is at or below this share of the
/// quota (in percent).
pub(crate) const DISARM_BELOW_PERCENT: u64 = 90;

/// What a member's `Maintenance.Status` says about its database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MemberDb {
    pub id: u64,
    pub name: String,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub is_leader: bool,
    pub is_learner: bool,
}

impl MemberDb {
    pub(crate) fn free(&self) -> u64 {
        self.db_size.saturating_sub(self.db_size_in_use)
    }

    /// dbSize as a share of the quota, in percent (rounded down).
    pub(crate) fn quota_used(&self, quota: u64) -> u64 {
        self.db_size.saturating_mul(100) / quota.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Free,
    QuotaUsed,
    DbSize,
    InUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Cmp(Var, Op, u64),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A parsed `maintenance.defrag_when`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    text: String,
    expr: Expr,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Rule {
    /// `free > 200MiB or quota_used > 80%`: comparisons of `free`, `db_size`, `in_use` (bytes,
    /// with B, KiB, MiB, GiB, KB, MB, GB) and `quota_used` (a percentage), joined by `and`
    /// (binding tighter) and `or`, with parentheses.
    pub(crate) fn parse(text: &str) -> Result<Rule, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, pos: 0 };
        let expr = p.or()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(format!("unexpected {t:?} after a complete rule"));
        }
        Ok(Rule {
            text: text.trim().to_string(),
            expr,
        })
    }

    pub(crate) fn holds(&self, m: &MemberDb, quota: u64) -> bool {
        eval(&self.expr, m, quota)
    }
}

fn eval(e: &Expr, m: &MemberDb, quota: u64) -> bool {
    match e {
        Expr::And(a, b) => eval(a, m, quota) && eval(b, m, quota),
        Expr::Or(a, b) => eval(a, m, quota) || eval(b, m, quota),
        Expr::Cmp(var, op, value) => {
            let x = match var {
                Var::Free => m.free(),
                Var::QuotaUsed => m.quota_used(quota),
                Var::DbSize => m.db_size,
                Var::InUse => m.db_size_in_use,
            };
            match op {
                Op::Gt => x > *value,
                Op::Ge => x >= *value,
                Op::Lt => x < *value,
                Op::Le => x <= *value,
            }
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            out.push(c.to_string());
            i += 1;
        } else if c == '>' || c == '<' {
            if chars.get(i + 1) == Some(&'=') {
                out.push(format!("{c}="));
                i += 2;
            } else {
                out.push(c.to_string());
                i += 1;
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '%' || c == '.' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '%'
                    || chars[i] == '.')
            {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    if out.is_empty() {
        return Err("is empty".into());
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, String> {
        let t = self.tokens.get(self.pos).cloned().ok_or("ends too early")?;
        self.pos += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        while self.peek() == Some("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.atom()?));
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        if self.peek() == Some("(") {
            self.pos += 1;
            let e = self.or()?;
            if self.next()? != ")" {
                return Err("missing ')'".into());
            }
            return Ok(e);
        }
        let name = self.next()?;
        let var = match name.as_str() {
            "free" => Var::Free,
            "quota_used" => Var::QuotaUsed,
            "db_size" => Var::DbSize,
            "in_use" => Var::InUse,
            other => {
                return Err(format!(
                    "unknown value {other:?}; known: free, quota_used, db_size, in_use"
                ))
            }
        };
        let op = match self.next()?.as_str() {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            other => {
                return Err(format!(
                    "expected >, >=, < or <= after {name}, got {other:?}"
                ))
            }
        };
        let value = self.next()?;
        let n = if var == Var::QuotaUsed {
            let pct = value.strip_suffix('%').ok_or_else(|| {
                format!("quota_used is compared with a percentage like 80%, got {value:?}")
            })?;
            let n: u64 = pct
                .parse()
                .map_err(|_| format!("{value:?} is not a whole percentage"))?;
            if n > 100 {
                return Err(format!("{value:?} is more than 100%"));
            }
            n
        } else {
            bytes(&value)?
        };
        Ok(Expr::Cmp(var, op, n))
    }
}

/// `200MiB`, `1GB`, `4096`, `512KiB`.
pub(crate) fn bytes(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 200MiB"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `maintenance.window`: `HH:MM-HH:MM` UTC, possibly across midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Minutes after midnight UTC.
    pub start: u16,
    pub end: u16,
}

impl Window {
    pub(crate) fn parse(text: &str) -> Result<Window, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not a window like \"02:00-05:00\" (UTC)"))?;
        let minutes = |t: &str| -> Result<u16, String> {
            let (h, m) = t
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{t:?} is not a time like 02:00"))?;
            let (h, m): (u16, u16) = (
                h.parse()
                    .map_err(|_| format!("{t:?} is not a time like 02:00"))?,
                m.parse()
                    .map_err(|_| format!("{t:?} is not a time like 02:00"))?,
            );
            if h > 23 || m > 59 {
                return Err(format!("{t:?} is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let w = Window {
            start: minutes(a)?,
            end: minutes(b)?,
        };
        if w.start == w.end {
            return Err(format!("{text:?} is an empty window"));
        }
        Ok(w)
    }

    /// Whether `minute` (after midnight UTC) is inside; the end is excluded.
    pub(crate) fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Why nothing is defragmented now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hold {
    OutsideWindow,
    /// A member does not answer or is not healthy: a defrag would leave the cluster one member
    /// short of its margin.
    Unhealthy(String),
    /// No member matches the rule.
    NothingToDo,
}

/// The members to defragment, in order: followers (learners first, then voters by name), the
/// leader last. `all`: every member, whatever the rule (`defrag --all`, NOSPACE).
pub(crate) fn plan(
    members: &[MemberDb],
    unhealthy: &[String],
    rule: Option<&Rule>,
    quota: u64,
    all: bool,
    in_window: bool,
) -> Result<Vec<MemberDb>, Hold> {
    if !in_window {
        return Err(Hold::OutsideWindow);
    }
    if !unhealthy.is_empty() {
        return Err(Hold::Unhealthy(unhealthy.join(", ")));
    }
    let mut chosen: Vec<MemberDb> = members
        .iter()
        .filter(|m| all || rule.is_some_and(|r| r.holds(m, quota)))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(Hold::NothingToDo);
    }
    chosen.sort_by(|a, b| {
        (a.is_leader, !a.is_learner, &a.name).cmp(&(b.is_leader, !b.is_learner, &b.name))
    });
    Ok(chosen)
}

/// What to do about a raised NOSPACE alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Nospace {
    /// Every member is at or below 90% of the quota: disarm.
    Disarm,
    /// A defrag brings these members under 90% (their live data fits): defragment them, then
    /// look again.
    Defrag(Vec<u64>),
    /// The live data of these members is above 90% of the quota: only deleting keys (and
    /// compacting) frees space. Said once per check, no loop of defrags.
    CannotFree(String),
}

pub(crate) fn nospace(members: &[MemberDb], quota: u64) -> Nospace {
    let limit = quota / 100 * DISARM_BELOW_PERCENT;
    let over: Vec<&MemberDb> = members.iter().filter(|m| m.db_size > limit).collect();
    if over.is_empty() {
        return Nospace::Disarm;
    }
    let stuck: Vec<String> = over
        .iter()
        .filter(|m| m.db_size_in_use > limit)
        .map(|m| {
            format!(
                "{} holds {} MiB of live data, the quota is {} MiB",
                m.name,
                m.db_size_in_use >> 20,
                quota >> 20
            )
        })
        .collect();
    if !stuck.is_empty() {
        return Nospace::CannotFree(format!(
            "{}: delete keys, then compact (etcdctl compact $(etcdctl endpoint status -w json | jq '.[0].Status.header.revision')); the agents then defragment and disarm the alarm by themselves, or raise quota-backend-bytes in [etcd.flags]",
            stuck.join("; ")
        ));
    }
    Nospace::Defrag(over.iter().map(|m| m.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn db(id: u64, name: &str, size_mib: u64, in_use_mib: u64, leader: bool) -> MemberDb {
        MemberDb {
            id,
            name: name.into(),
            db_size: size_mib * MIB,
            db_size_in_use: in_use_mib * MIB,
            is_leader: leader,
            is_learner: false,
        }
    }

    #[test]
    fn rule_table() {
        let quota = 1000 * MIB;
        // (rule, db MiB, in use MiB, holds)
        let table = [
            ("free > 200MiB or quota_used > 80%", 300, 50, true),
            ("free > 200MiB or quota_used > 80%", 300, 150, false),
            ("free > 200MiB or quota_used > 80%", 810, 800, true),
            ("free > 200MiB and quota_used > 80%", 810, 800, false),
            ("free >= 10MiB", 20, 10, true),
            (
                "db_size < 1GiB and (in_use <= 5MiB or free > 1GB)",
                100,
                5,
                true,
            ),
            (
                "db_size < 1GiB and (in_use <= 5MiB or free > 1GB)",
                100,
                6,
                false,
            ),
            // `and` binds tighter than `or`.
            ("free > 1MiB or free > 0 and db_size > 1GiB", 5, 1, true),
            ("quota_used >= 50%", 500, 500, true),
            ("quota_used > 50%", 500, 500, false),
        ];
        for (i, (text, size, in_use, want)) in table.into_iter().enumerate() {
            let r = Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                r.holds(&db(1, "a", size, in_use, false), quota),
                want,
                "case {i}: {text}"
            );
        }
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("fre > 1MiB", "unknown value \"fre\""),
            ("free 1MiB", "expected >"),
            ("free > 1TB", "unknown unit \"TB\""),
            ("quota_used > 80", "percentage"),
            ("quota_used > 180%", "more than 100%"),
            ("free > 1MiB or", "ends too early"),
            ("(free > 1MiB", "ends too early"),
            ("free > 1MiB free", "unexpected \"free\""),
            ("free > 1MiB; rm", "unexpected character ';'"),
            ("free > 99999999999999999999GiB", "not a size"),
        ] {
            let e = Rule::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn window_table() {
        let w = Window::parse("02:00-05:00").unwrap();
        assert!(w.contains(120) && w.contains(299) && !w.contains(300) && !w.contains(60));
        // Across midnight.
        let n = Window::parse("23:30-01:00").unwrap();
        assert!(n.contains(23 * 60 + 45) && n.contains(30) && !n.contains(60) && !n.contains(600));
        for bad in ["2-5", "02:00", "25:00-01:00", "02:00-02:00", "02:61-03:00"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plan_table() {
        let rule = Rule::parse("free > 100MiB").unwrap();
        let quota = DEFAULT_QUOTA;
        let members = vec![
            db(1, "etcd1", 500, 100, true),
            db(2, "etcd2", 500, 100, false),
            db(3, "etcd3", 120, 100, false),
        ];
        let ids =
            |r: Result<Vec<MemberDb>, Hold>| r.map(|v| v.iter().map(|m| m.id).collect::<Vec<_>>());
        // The rule picks 1 and 2; the leader goes last.
        assert_eq!(
            ids(plan(&members, &[], Some(&rule), quota, false, true)),
            Ok(vec![2, 1])
        );
        // --all: every member, followers by name, leader last.
        assert_eq!(
            ids(plan(&members, &[], None, quota, true, true)),
            Ok(vec![2, 3, 1])
        );
        // A learner goes first: it holds no vote.
        let mut with_learner = members.clone();
        with_learner.push(MemberDb {
            is_learner: true,
            ..db(4, "etcd4", 500, 100, false)
        });
        assert_eq!(
            ids(plan(&with_learner, &[], Some(&rule), quota, false, true)),
            Ok(vec![4, 2, 1])
        );
        // Never while a member is unhealthy, never outside the window.
        assert_eq!(
            ids(plan(
                &members,
                &["etcd3".into()],
                Some(&rule),
                quota,
                false,
                true
            )),
            Err(Hold::Unhealthy("etcd3".into()))
        );
        assert_eq!(
            ids(plan(&members, &[], Some(&rule), quota, false, false)),
            Err(Hold::OutsideWindow)
        );
        let lean = vec![db(1, "etcd1", 120, 100, true)];
        assert_eq!(
            ids(plan(&lean, &[], Some(&rule), quota, false, true)),
            Err(Hold::NothingToDo)
        );
        // No rule (defrag_when = ""): nothing unless --all.
        assert_eq!(
            ids(plan(&members, &[], None, quota, false, true)),
            Err(Hold::NothingToDo)
        );
    }

    #[test]
    fn nospace_table() {
        let quota = 100 * MIB;
        // Every member under 90 MiB: disarm.
        assert_eq!(
            nospace(
                &[db(1, "a", 90, 80, true), db(2, "b", 50, 40, false)],
                quota
            ),
            Nospace::Disarm
        );
        // Over, but the live data fits: defragment those.
        assert_eq!(
            nospace(
                &[
                    db(1, "a", 100, 20, true),
                    db(2, "b", 95, 20, false),
                    db(3, "c", 30, 20, false)
                ],
                quota
            ),
            Nospace::Defrag(vec![1, 2])
        );
        // Live data over 90%: only deleting keys helps; say so, do not loop.
        match nospace(
            &[db(1, "a", 100, 95, true), db(2, "b", 100, 20, false)],
            quota,
        ) {
            Nospace::CannotFree(why) => {
                assert!(why.contains("a holds 95 MiB of live data"), "{why}");
                assert!(why.contains("delete keys"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}
