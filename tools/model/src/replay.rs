//! A path of actions replayed through the model, step by step: how a counterexample the checker
//! printed is kept as a regression test of the machines.

use stateright::{Expectation, Model};

use crate::{Action, OrderModel, State};

/// Where a replay stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Every action happened; the state after the last one, and the safety properties that
    /// fail in some state on the way.
    Done {
        /// The last state.
        state: Box<State>,
        /// The names of the `always` properties broken along the path.
        broken: Vec<&'static str>,
    },
    /// An action could not happen (the machines no longer allow it); the actions before it
    /// happened.
    Refused {
        /// Its place in the path.
        at: usize,
        /// The action.
        action: Action,
        /// The names of the `always` properties broken before it.
        broken: Vec<&'static str>,
    },
}

/// Replays `path` from the model's initial state.
pub fn replay(model: &OrderModel, path: &[Action]) -> Replayed {
    let mut broken: Vec<&'static str> = Vec::new();
    let Some(mut state) = model.init_states().into_iter().next() else {
        return Replayed::Refused {
            at: 0,
            action: path.first().cloned().unwrap_or(Action::Crash(0)),
            broken,
        };
    };
    for (at, action) in path.iter().enumerate() {
        let mut possible = Vec::new();
        model.actions(&state, &mut possible);
        let next = possible
            .contains(action)
            .then(|| model.next_state(&state, action.clone()))
            .flatten();
        let Some(next) = next else {
            return Replayed::Refused {
                at,
                action: action.clone(),
                broken,
            };
        };
        state = next;
        for property in model.properties() {
            let holds = (property.condition)(model, &state);
            if property.expectation == Expectation::Always
                && !holds
                && !broken.contains(&property.name)
            {
                broken.push(property.name);
            }
        }
    }
    Replayed::Done {
        state: Box::new(state),
        broken,
    }
}
