//! The target port a command arrived through: what VPD page 0x83 and REPORT TARGET
//! PORT GROUPS say about it.

/// The port through which the command arrived (for VPD 0x83 and ALUA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPort {
    pub target_name: String,
    pub portal_group_tag: u16,
    pub relative_port: u16,
    /// ALUA target port group identifier.
    pub group_id: u16,
}

impl TargetPort {
    /// The one port of a target with one portal group: relative port 1, in ALUA
    /// target port group 0.
    pub fn new(target_name: impl Into<String>, portal_group_tag: u16) -> TargetPort {
        TargetPort {
            target_name: target_name.into(),
            portal_group_tag,
            relative_port: 1,
            group_id: 0,
        }
    }

    /// This instance's port as one port of a logical unit that several instances
    /// serve under one WWID: its own ALUA target port group and relative port (both
    /// `id`), so an initiator's ALUA handler keeps one state per instance.
    pub fn in_group(mut self, id: u16) -> TargetPort {
        self.group_id = id;
        self.relative_port = id.max(1);
        self
    }
}
