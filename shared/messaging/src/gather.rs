//! Gathering the work that arrives together into one batch: one policy for the command lanes
//! (`rpc`) and for group commit (`service_kit::group_commit`).

use tokio::sync::mpsc;

/// How many times [`gather`] yields to the runtime after taking what waits. A yield costs
/// nothing when no other task is ready (lone work goes at once), and lets the tasks that are
/// ready run first: at moderate load they are often about to add work too, which then joins
/// this batch instead of the next.
pub const LINGER_YIELDS: usize = 4;

/// Moves into `batch` (up to `max` items) what waits in `receiver`, then yields to the runtime
/// [`LINGER_YIELDS`] times (no timer), taking what arrived after each yield.
pub async fn gather<T>(receiver: &mut mpsc::UnboundedReceiver<T>, batch: &mut Vec<T>, max: usize) {
    take_waiting(receiver, batch, max);
    for _ in 0..LINGER_YIELDS {
        if batch.len() >= max {
            break;
        }
        tokio::task::yield_now().await;
        take_waiting(receiver, batch, max);
    }
}

fn take_waiting<T>(receiver: &mut mpsc::UnboundedReceiver<T>, batch: &mut Vec<T>, max: usize) {
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_waits_and_what_ready_tasks_add_up_to_the_limit() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        sender.send(1).unwrap();
        let late = sender.clone();
        tokio::spawn(async move {
            late.send(2).unwrap();
        });
        let mut batch = Vec::new();
        gather(&mut receiver, &mut batch, 8).await;
        assert_eq!(batch, vec![1, 2]);

        for n in 0..10 {
            sender.send(n).unwrap();
        }
        let mut batch = Vec::new();
        gather(&mut receiver, &mut batch, 4).await;
        assert_eq!(batch, vec![0, 1, 2, 3]);
    }
}
