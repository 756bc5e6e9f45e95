//! One value per participant: what the coordinator holds, sends or hears for the store and for
//! delivery, side by side, instead of a two-element array whose index means a participant.

use crate::topology::Participant;

/// A `T` for the store and a `T` for delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sides<T> {
    /// The store's.
    pub store: T,
    /// Delivery's.
    pub delivery: T,
}

impl<T> Sides<T> {
    /// The store's and delivery's.
    pub fn new(store: T, delivery: T) -> Self {
        Self { store, delivery }
    }

    /// The same value for both.
    pub fn both(value: T) -> Self
    where
        T: Clone,
    {
        Self {
            store: value.clone(),
            delivery: value,
        }
    }

    /// Each value mapped, with the side it belongs to.
    pub fn map<U>(self, mut f: impl FnMut(Participant, T) -> U) -> Sides<U> {
        Sides {
            store: f(Participant::Store, self.store),
            delivery: f(Participant::Delivery, self.delivery),
        }
    }

    /// Borrowed values.
    pub fn as_ref(&self) -> Sides<&T> {
        Sides {
            store: &self.store,
            delivery: &self.delivery,
        }
    }

    /// The sides, store first, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (Participant, &T)> {
        [
            (Participant::Store, &self.store),
            (Participant::Delivery, &self.delivery),
        ]
        .into_iter()
    }

    /// The first side (store first) whose value passes `test`.
    pub fn find(&self, mut test: impl FnMut(&T) -> bool) -> Option<(Participant, &T)> {
        self.iter().find(|(_, value)| test(value))
    }

    /// Whether both values pass `test`.
    pub fn all(&self, mut test: impl FnMut(&T) -> bool) -> bool {
        test(&self.store) && test(&self.delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_keep_their_participant() {
        let sides = Sides::new(1, 2).map(|side, n| (side, n * 10));
        assert_eq!(sides.store, (Participant::Store, 10));
        assert_eq!(sides.delivery, (Participant::Delivery, 20));
        assert_eq!(
            Sides::new(1, 2).find(|n| *n > 1),
            Some((Participant::Delivery, &2))
        );
        assert!(Sides::both(3).all(|n| *n == 3));
    }
}
