//! Gate reconciliation: compile the spec, report whether the gate is usable, and record who
//! changed it.

use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use kube::Resource;
use kube::runtime::controller::Action;

use super::error::ReconcileError;
use super::patch::merge_diff;
use super::{Context, error_policy, instrumented, key};
use crate::api::conditions::{self, Health, kstatus};
use crate::api::gate::{Gate, GateStatus};
use crate::gates;
use crate::validation::ValidationErrors;

const CONTROLLER: &str = "gate";

pub async fn controller(ctx: Arc<Context>) {
    let settle = ctx.queue.clone();
    super::queue::controller::<Gate>(&ctx.index, &ctx.queue, CONTROLLER)
        .shutdown_on_signal()
        .run(reconcile, error_policy(CONTROLLER), ctx)
        .for_each(|result| settle.settled(CONTROLLER, result))
        .await;
}

async fn reconcile(gate: Arc<Gate>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    key(&*gate)?;
    instrumented(CONTROLLER, &*gate, &ctx, reconcile_gate(&gate, &ctx)).await
}

async fn reconcile_gate(gate: &Gate, ctx: &Context) -> Result<Action, ReconcileError> {
    let compiled = gates::compile(&gate.spec, ctx.runner.env()).map(|_| ());
    let compiled = match compiled {
        Ok(()) => {
            let refused = gates::resolution_errors(&gate.spec, ctx.runner.env()).await;
            if refused.is_empty() {
                Ok(())
            } else {
                Err(refused)
            }
        }
        Err(errors) => Err(errors),
    };
    let (health, reason, message) = match compiled {
        Ok(_) => (
            Health::Ready,
            "Valid",
            format!("{} gate is valid", gate.spec.gate_type.as_str()),
        ),
        Err(errors) => (
            Health::Stalled,
            "InvalidSpec",
            ValidationErrors(errors).to_string(),
        ),
    };
    let old = gate.status.clone().unwrap_or_default();
    let generation = gate.meta().generation;
    let changes = super::changes::updated(gate, &gate.spec, &old.changes, ctx);
    let new = GateStatus {
        changes,
        observed_generation: generation,
        message: Some(message.clone()),
        conditions: conditions::merge(
            &old.conditions,
            kstatus(health, reason, &message),
            Timestamp::now(),
            generation,
        ),
    };
    if let Some(diff) = merge_diff(&serde_json::to_value(&old)?, &serde_json::to_value(&new)?) {
        ctx.writer.status("gate_status", gate, diff).await?;
        super::changes::announce(gate, &old.changes, &new.changes, ctx).await;
    }
    Ok(Action::await_change())
}
