// SPDX-License-Identifier: Apache-2.0
//! Fault injection: failed, delayed and dropped replies, spurious vectors.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_abi::{Command, MsixVector};
    use ne_device::error::errno::ENOMEM;
    use ne_device::test_utils::{read_reply, ring};

    #[test]
    fn test_fail_next_answers_rc_without_executing() {
        let (mut device, irq) = probed();
        device
            .faults_mut()
            .fail_next(Some(Command::SlotAlloc), 2, -ENOMEM)
            .unwrap();
        assert_eq!(alloc(&mut device).rc.get(), -ENOMEM);
        assert_eq!(alloc(&mut device).rc.get(), -ENOMEM);
        assert!(device.slots().is_empty(), "failed commands changed nothing");
        assert_eq!(alloc(&mut device).rc.get(), 0, "third one runs");
        assert_eq!(irq.count(MsixVector::Reply), 3);
    }

    #[test]
    fn test_fail_next_only_catches_its_command() {
        let (mut device, _) = probed();
        device
            .faults_mut()
            .fail_next(Some(Command::SlotFree), 1, -ENOMEM)
            .unwrap();
        assert_eq!(alloc(&mut device).rc.get(), 0);
    }

    #[test]
    fn test_fail_next_with_positive_rc_is_delivered_as_is() {
        let (mut device, _) = probed();
        device.faults_mut().fail_next(None, 1, 7).unwrap();
        assert_eq!(alloc(&mut device).rc.get(), 7);
    }

    #[test]
    fn test_delayed_reply_arrives_on_release_and_blocks_doorbells_meanwhile() {
        let (mut device, irq) = probed();
        device
            .faults_mut()
            .delay_next(Some(Command::SlotAlloc), 1)
            .unwrap();
        ring(&mut device, Command::SlotAlloc.number());
        assert_eq!(irq.raised(), vec![]);
        assert_eq!(device.slots().len(), 1, "the command ran");
        ring(&mut device, Command::SlotAlloc.number());
        assert_eq!(device.slots().len(), 1, "the second doorbell was ignored");
        assert!(device.release_held_reply().unwrap());
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
        assert_eq!(read_reply(&mut device).slot_uid.get(), 1);
        assert!(
            !device.release_held_reply().unwrap(),
            "nothing more is held"
        );
    }

    #[test]
    fn test_dropped_reply_raises_nothing_and_next_command_works() {
        let (mut device, irq) = probed();
        device.faults_mut().drop_next(None, 1).unwrap();
        ring(&mut device, Command::SlotAlloc.number());
        assert_eq!(irq.raised(), vec![]);
        assert_eq!(device.events().stats().dropped_replies, 1);
        let reply = alloc(&mut device);
        assert_eq!(reply.slot_uid.get(), 2);
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
    }

    #[test]
    fn test_spurious_vector_is_raised_on_request() {
        let (mut device, irq) = probed();
        device.raise_spurious(MsixVector::Event).unwrap();
        device.raise_spurious(MsixVector::Reply).unwrap();
        assert_eq!(irq.raised(), vec![MsixVector::Event, MsixVector::Reply]);
    }

    #[test]
    fn test_disable_forgets_held_reply() {
        let (mut device, irq) = probed();
        device.faults_mut().delay_next(None, 1).unwrap();
        ring(&mut device, Command::SlotAlloc.number());
        device.write_bar(ne_abi::regs::ENABLE, &[0]).unwrap();
        assert!(!device.is_busy());
        assert!(!device.release_held_reply().unwrap());
        assert_eq!(irq.raised(), vec![]);
    }

    #[test]
    fn test_history_records_commands_with_their_rc_and_drops() {
        let (mut device, _) = probed();
        device
            .faults_mut()
            .drop_next(Some(Command::SlotFree), 1)
            .unwrap();
        alloc(&mut device);
        ring(&mut device, Command::SlotFree.number());
        ring(&mut device, 0);
        let history: Vec<(u32, Option<i32>)> = device
            .events()
            .history()
            .into_iter()
            .map(|r| (r.command, r.rc))
            .collect();
        assert_eq!(history, [(4, Some(0)), (5, None), (0, Some(-22))]);
    }
}
