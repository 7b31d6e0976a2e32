//! Aging: how long past its due date a deficiency is, in the buckets a records office reports
//! on (the first week, the second, the rest of the month, and beyond).

use chartsync_core::chart::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aging {
    /// In house, with nothing due yet (only the H&P is due before discharge).
    NoDueDate,
    NotDue,
    Days1To7,
    Days8To14,
    Days15To30,
    Over30,
    /// Accepted as it stands by the records office (a late H&P): no longer aging.
    Acknowledged,
}

impl Aging {
    pub const ALL: [Aging; 7] = [
        Aging::NoDueDate,
        Aging::NotDue,
        Aging::Days1To7,
        Aging::Days8To14,
        Aging::Days15To30,
        Aging::Over30,
        Aging::Acknowledged,
    ];

    /// The bucket, and the days overdue: any part of a day past the due time counts as a day.
    pub fn of(due: Option<Timestamp>, now: Timestamp) -> (Aging, Option<i64>) {
        let Some(due) = due else {
            return (Aging::NoDueDate, None);
        };
        let late = now.unix() - due.unix();
        if late <= 0 {
            return (Aging::NotDue, None);
        }
        let days = late.div_euclid(86_400) + i64::from(late.rem_euclid(86_400) != 0);
        let bucket = match days {
            ..=7 => Aging::Days1To7,
            8..=14 => Aging::Days8To14,
            15..=30 => Aging::Days15To30,
            _ => Aging::Over30,
        };
        (bucket, Some(days))
    }

    pub fn label(self) -> &'static str {
        match self {
            Aging::NoDueDate => "No due date yet",
            Aging::NotDue => "Not yet due",
            Aging::Days1To7 => "1–7 days overdue",
            Aging::Days8To14 => "8–14 days overdue",
            Aging::Days15To30 => "15–30 days overdue",
            Aging::Over30 => "Over 30 days overdue",
            Aging::Acknowledged => "Acknowledged",
        }
    }
}

/// Each bucket with how many of `agings` fall in it, in the order of [`Aging::ALL`].
pub fn counts(agings: impl Iterator<Item = Aging>) -> Vec<(&'static str, usize)> {
    let mut n = [0usize; Aging::ALL.len()];
    for a in agings {
        n[Aging::ALL.iter().position(|b| *b == a).unwrap_or(0)] += 1;
    }
    Aging::ALL
        .iter()
        .zip(n)
        .map(|(a, count)| (a.label(), count))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn days_overdue_count_any_part_of_a_day_and_fall_in_their_bucket() {
        let due = Some(at("2026-11-01T12:00:00Z"));
        assert_eq!(
            Aging::of(None, at("2026-11-01T12:00:00Z")),
            (Aging::NoDueDate, None)
        );
        assert_eq!(
            Aging::of(due, at("2026-11-01T12:00:00Z")),
            (Aging::NotDue, None)
        );
        assert_eq!(
            Aging::of(due, at("2026-11-01T12:00:01Z")),
            (Aging::Days1To7, Some(1))
        );
        assert_eq!(
            Aging::of(due, at("2026-11-08T12:00:00Z")),
            (Aging::Days1To7, Some(7))
        );
        assert_eq!(
            Aging::of(due, at("2026-11-08T12:00:01Z")),
            (Aging::Days8To14, Some(8))
        );
        assert_eq!(
            Aging::of(due, at("2026-11-15T12:00:00Z")),
            (Aging::Days8To14, Some(14))
        );
        assert_eq!(
            Aging::of(due, at("2026-12-01T12:00:00Z")),
            (Aging::Days15To30, Some(30))
        );
        assert_eq!(
            Aging::of(due, at("2026-12-01T12:00:01Z")),
            (Aging::Over30, Some(31))
        );
    }

    #[test]
    fn the_counts_cover_every_bucket_in_order() {
        let c = counts([Aging::Over30, Aging::NotDue, Aging::Over30].into_iter());
        assert_eq!(c.len(), 7);
        assert_eq!(c[1], ("Not yet due", 1));
        assert_eq!(c[5], ("Over 30 days overdue", 2));
        assert_eq!(c.iter().map(|(_, n)| n).sum::<usize>(), 3);
    }
}
