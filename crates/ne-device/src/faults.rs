// SPDX-License-Identifier: Apache-2.0
//! Fault injection: make the device misbehave on purpose, the way a driver must survive.

use ne_abi::Command;
use thiserror::Error;

/// The most fault rules armed at once.
pub const MAX_FAULT_RULES: usize = 64;

/// What happens to a command a rule catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultAction {
    /// The command is not executed; the reply carries `rc` (any value, even a positive one).
    Fail {
        /// The reply's rc.
        rc: i32,
    },
    /// The command is executed, but its reply (and vector 0) is held until
    /// [`crate::NePciDevice::release_held_reply`]. Doorbells meanwhile are ignored.
    Delay,
    /// The command is executed, but no reply is written and no vector raised.
    Drop,
}

/// One armed fault: the next `remaining` commands of a type get `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultRule {
    /// The command caught; `None` catches every command.
    pub command: Option<Command>,
    /// How many more commands the rule catches.
    pub remaining: u32,
    /// What it does to them.
    pub action: FaultAction,
}

/// The plan is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("At most {MAX_FAULT_RULES} fault rules can be armed; clear some first")]
pub struct TooManyFaults;

/// The armed faults, checked in the order they were armed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// Arms `rule`. A rule with `remaining == 0` is accepted and does nothing.
    pub fn arm(&mut self, rule: FaultRule) -> Result<(), TooManyFaults> {
        if self.rules.len() >= MAX_FAULT_RULES {
            return Err(TooManyFaults);
        }
        if rule.remaining > 0 {
            self.rules.push(rule);
        }
        Ok(())
    }

    /// Makes the next `count` commands of type `command` (any, if `None`) answer `rc`.
    pub fn fail_next(
        &mut self,
        command: Option<Command>,
        count: u32,
        rc: i32,
    ) -> Result<(), TooManyFaults> {
        self.arm(FaultRule {
            command,
            remaining: count,
            action: FaultAction::Fail { rc },
        })
    }

    /// Makes the replies to the next `count` commands of type `command` wait for release.
    pub fn delay_next(
        &mut self,
        command: Option<Command>,
        count: u32,
    ) -> Result<(), TooManyFaults> {
        self.arm(FaultRule {
            command,
            remaining: count,
            action: FaultAction::Delay,
        })
    }

    /// Makes the replies to the next `count` commands of type `command` vanish.
    pub fn drop_next(&mut self, command: Option<Command>, count: u32) -> Result<(), TooManyFaults> {
        self.arm(FaultRule {
            command,
            remaining: count,
            action: FaultAction::Drop,
        })
    }

    /// Disarms every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The armed rules.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// The action for one arriving `command`, using up one catch of the first matching rule.
    pub(crate) fn take(&mut self, command: Command) -> Option<FaultAction> {
        let index = self
            .rules
            .iter()
            .position(|rule| rule.command.is_none_or(|caught| caught == command))?;
        let rule = self.rules.get_mut(index)?;
        let action = rule.action;
        rule.remaining -= 1;
        if rule.remaining == 0 {
            self.rules.remove(index);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fault_plan_catches_count_commands_then_disarms() {
        let mut plan = FaultPlan::default();
        plan.fail_next(Some(Command::SlotAlloc), 2, -12).unwrap();
        assert_eq!(plan.take(Command::SlotFree), None);
        assert_eq!(
            plan.take(Command::SlotAlloc),
            Some(FaultAction::Fail { rc: -12 })
        );
        assert_eq!(
            plan.take(Command::SlotAlloc),
            Some(FaultAction::Fail { rc: -12 })
        );
        assert_eq!(plan.take(Command::SlotAlloc), None);
        assert!(plan.rules().is_empty());
    }

    #[test]
    fn test_fault_plan_is_bounded() {
        let mut plan = FaultPlan::default();
        for _ in 0..MAX_FAULT_RULES {
            plan.drop_next(None, 1).unwrap();
        }
        assert_eq!(plan.drop_next(None, 1), Err(TooManyFaults));
    }

    #[test]
    fn test_a_rule_for_no_command_is_not_kept_and_clear_disarms_all() {
        let mut plan = FaultPlan::default();
        plan.delay_next(None, 0).unwrap();
        assert!(plan.rules().is_empty(), "a rule for 0 commands is dropped");
        plan.delay_next(Some(Command::SlotFree), 1).unwrap();
        plan.drop_next(None, 3).unwrap();
        assert_eq!(plan.rules().len(), 2);
        assert_eq!(plan.rules()[1].remaining, 3);
        plan.clear();
        assert!(plan.rules().is_empty());
        assert_eq!(plan.take(Command::SlotFree), None);
    }
}
