"""The tables that turn cloud event codes into kubesight reasons and severities.

Reasons are the names the default rule pack matches; the provider's own code is always kept
in the ``event_code`` label, so a rule can be more specific than the table.

>>> alibaba_reason("Instance:SystemMaintenance.Reboot", "Scheduled")
('InstanceRebootScheduled', 'critical')
>>> alibaba_reason("Instance:SystemMaintenance.Reboot", "Avoided")
('InstanceRebootScheduled', 'info')
>>> health_reason("AWS_EBS_VOLUME_LOST", "issue", "open")
('DiskFault', 'critical')
>>> health_reason("AWS_EC2_ODCR_UNDERUTILIZATION_NOTIFICATION", "accountNotification", "")
('HealthEvent', 'info')
>>> settled("InstanceRebootScheduled", "Canceled"), settled("InstanceRebootScheduled", "Failed")
('InstanceRebootEnded', 'InstanceRebootEnded')
>>> settled("DiskStalled", "Failed")  # a stall that failed is not over
'DiskStalled'
"""

from __future__ import annotations

REASONS = (
    "InstanceRebootScheduled",  # the instance will be (or was, see label phase) rebooted by the provider
    "InstanceRedeployScheduled",  # moved to another host: reboot plus possible local-disk loss
    "InstanceMaintenance",  # other provider maintenance: stop, retirement, disk isolation, expiry
    "SpotInterruption",  # spot / preemptible instance about to be reclaimed
    "RebalanceRecommendation",  # spot instance at elevated risk of interruption
    "DiskStalled",  # disk I/O hang or degraded performance
    "DiskFault",  # disk damaged, lost or released
    "InstanceStateChange",  # lifecycle state change (label state)
    "InstanceFailure",  # unplanned reboot/stop/release after an instance or host error
    "HealthEvent",  # any other AWS Health event (labels eventTypeCode, service, category)
    "CloudNotice",  # informational notice needing no action (snapshot done, billing, burst credits, live migration)
    # the end of a maintenance or stall (label phase: Executed, Avoided or Canceled; label original_reason: the
    # reason above it ends), a reason of its own so that the default pack's state rules resolve on it
    "InstanceRebootEnded",
    "InstanceRedeployEnded",
    "InstanceMaintenanceEnded",
    "DiskStallEnded",
)

# Alibaba ECS: "<resource>:<event type>" (the event name without its phase) -> (reason, severity while active).
# Covers every name of ecs_system_event_catalog.csv, the EventBridge ECS event types and the
# event types the Describe* APIs report.
ALIBABA = {
    "Instance:SystemMaintenance.Reboot": ("InstanceRebootScheduled", "critical"),
    "Instance:SystemMaintenance.RebootAndIsolateErrorDisk": ("InstanceRebootScheduled", "critical"),
    "Instance:SystemMaintenance.RebootAndReInitErrorDisk": ("InstanceRebootScheduled", "critical"),
    "Instance:SystemMaintenance.Redeploy": ("InstanceRedeployScheduled", "critical"),
    "Instance:SystemFailure.Redeploy": ("InstanceRedeployScheduled", "critical"),
    "Instance:SystemMaintenance.Stop": ("InstanceMaintenance", "critical"),
    "Instance:SystemMaintenance.IsolateErrorDisk": ("InstanceMaintenance", "critical"),
    "Instance:SystemMaintenance.ReInitErrorDisk": ("InstanceMaintenance", "critical"),
    # no downtime, nothing to drain: a possible slowdown, disks cleaned up, a hot migration between dedicated hosts
    "Instance:SystemMaintenance.PerformanceImpact": ("CloudNotice", "warning"),
    "Instance:SystemMaintenance.CleanReleasedDisks": ("CloudNotice", "info"),
    "Instance:LiveMigrationAcrossDDH": ("CloudNotice", "info"),
    "Instance:InstanceExpiration.Stop": ("InstanceMaintenance", "warning"),
    "Instance:InstanceExpiration.Delete": ("InstanceMaintenance", "critical"),
    "Instance:AccountUnbalanced.Stop": ("InstanceMaintenance", "warning"),
    "Instance:AccountUnbalanced.Delete": ("InstanceMaintenance", "critical"),
    "Instance:SystemFailure.Reboot": ("InstanceFailure", "critical"),
    "Instance:InstanceFailure.Reboot": ("InstanceFailure", "critical"),
    "Instance:SystemFailure.Stop": ("InstanceFailure", "critical"),
    "Instance:SystemFailure.Delete": ("InstanceFailure", "critical"),
    "Instance:AutoReactivateCompleted": ("InstanceFailure", "warning"),
    "Instance:PreemptibleInstanceInterruption": ("SpotInterruption", "critical"),
    "Instance:StateChange": ("InstanceStateChange", "info"),
    "Instance:Security.TpmAlert": ("CloudNotice", "warning"),
    "Instance:BurstablePerformanceRestricted": ("CloudNotice", "warning"),
    "Instance:PerformanceModeChange": ("CloudNotice", "info"),
    "Instance:SurplusCreditIncurCharge": ("CloudNotice", "info"),
    "Disk:Stalled": ("DiskStalled", "critical"),
    "Disk:Degraded": ("DiskStalled", "warning"),
    "Disk:ErrorDetected": ("DiskFault", "critical"),
    "Disk:OverduePaymentRelease": ("DiskFault", "critical"),
    "Disk:DiskOperationCompleted": ("CloudNotice", "info"),
    "Disk:ConvertToPostpaidCompleted": ("CloudNotice", "info"),
    "Snapshot:CreateSnapshotCompleted": ("CloudNotice", "info"),
    "Snapshot:CreateSnapshotInitiated": ("CloudNotice", "info"),
    "Snapshot:SnapshotDeleted": ("CloudNotice", "info"),
}

# The lifecycle phases of an Alibaba system event (EventCycleStatus / the name's last part).
# The one phase vocabulary of every provider's events (label ``phase``): AWS scheduled events' states and
# AWS Health's closed status are spelled this way too (AWS_STATE_PHASE, HEALTH_STATUS_PHASE).
PHASES = ("Scheduled", "Inquiring", "Executing", "Executed", "Avoided", "Canceled", "Failed")
# Phases saying it is over: the event resolves what its active phases set (a Failed maintenance too: it is not
# scheduled any more, and CloudMaintenanceFailed pages on its end reason with phase Failed; a Failed stall is not over).
ENDED_PHASES = ("Executed", "Avoided", "Canceled", "Failed")
_FAILED_ENDS = ("InstanceRebootScheduled", "InstanceRedeployScheduled", "InstanceMaintenance")
# reason while active -> reason of its end (ENDED_PHASES).
ENDED = {
    "InstanceRebootScheduled": "InstanceRebootEnded",
    "InstanceRedeployScheduled": "InstanceRedeployEnded",
    "InstanceMaintenance": "InstanceMaintenanceEnded",
    "DiskStalled": "DiskStallEnded",
}
_UNPLANNED = ("InstanceFailure", "DiskFault")

# EC2 scheduled-event codes (IMDS maintenance/scheduled, describe-instance-status).
AWS_SCHEDULED = {
    "instance-reboot": ("InstanceRebootScheduled", "critical"),
    "system-reboot": ("InstanceRebootScheduled", "critical"),
    "system-maintenance": ("InstanceMaintenance", "warning"),
    "instance-retirement": ("InstanceMaintenance", "critical"),
    "instance-stop": ("InstanceMaintenance", "critical"),
}

# EC2 scheduled-event states (IMDS State, or the [Canceled] / [Completed] prefix of the description) -> phase.
AWS_STATE_PHASE = {"active": "Scheduled", "canceled": "Canceled", "completed": "Executed"}
# AWS Health statusCode -> phase: only the end says something the rules need (open / upcoming: no phase).
HEALTH_STATUS_PHASE = {"closed": "Executed"}

# AWS Health event type codes that say something precise about an instance or its disks.
AWS_HEALTH = {
    "AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED": ("InstanceRebootScheduled", "critical"),
    "AWS_EC2_INSTANCE_REBOOT_FLEXIBLE_MAINTENANCE_SCHEDULED": ("InstanceRebootScheduled", "critical"),
    "AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED": ("InstanceRebootScheduled", "critical"),
    "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_INSTANCE_RETIREMENT_EXPEDITED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_EXPEDITED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_INSTANCE_STOP_SCHEDULED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_INSTANCE_TERMINATION_SCHEDULED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_DEDICATED_HOST_ACCESS_REVOKED_RETIREMENT_SCHEDULED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED": ("InstanceMaintenance", "warning"),
    "AWS_EC2_PERSISTENT_INSTANCE_POWER_MAINTENANCE_SCHEDULED": ("InstanceMaintenance", "warning"),
    "AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED": ("InstanceMaintenance", "warning"),
    "AWS_EC2_MAINTENANCE_SCHEDULED": ("InstanceMaintenance", "warning"),
    "AWS_EC2_DEDICATED_HOST_MAINTENANCE_SCHEDULED": ("InstanceMaintenance", "warning"),
    "AWS_EC2_DEDICATED_HOST_NETWORK_MAINTENANCE_SCHEDULED": ("InstanceMaintenance", "warning"),
    "AWS_EC2_DEDICATED_HOST_POWER_MAINTENANCE_SCHEDULED": ("InstanceMaintenance", "warning"),
    "AWS_EC2_DEDICATED_HOST_RETIREMENT_SCHEDULED": ("InstanceMaintenance", "critical"),
    "AWS_EC2_INSTANCE_STORE_DRIVE_PERFORMANCE_DEGRADED": ("DiskStalled", "warning"),
    "AWS_EBS_DEGRADED_EBS_VOLUME_PERFORMANCE": ("DiskStalled", "warning"),
    "AWS_EBS_VOLUME_LOST": ("DiskFault", "critical"),
}
HEALTH_CATEGORY_SEVERITY = {"issue": "warning", "scheduledChange": "warning", "accountNotification": "info",
                            "investigation": "info"}

# Lifecycle states after which the node is gone or going (AWS and Alibaba spellings, lower-cased).
GOING_STATES = ("stopping", "stopped", "shutting-down", "terminated", "terminating", "deleted")


def alibaba_reason(event_type: str, phase: str) -> tuple[str, str] | None:
    """(reason, severity) of an Alibaba event type (``Instance:SystemMaintenance.Reboot``) in a phase.

    Avoided and canceled events need nothing; a completed planned event is information, a completed
    unplanned one (a reboot after a failure) is still worth a warning; a failed one is critical.
    None if the type is not in the table.
    """
    hit = ALIBABA.get(event_type)
    if hit is None:
        return None
    reason, severity = hit
    if reason == "InstanceFailure" and phase in ("Scheduled", "Inquiring") and event_type.endswith(".Reboot"):
        reason = "InstanceRebootScheduled"  # a repair reboot announced ahead: the node can be drained first
    if phase in ("Avoided", "Canceled"):
        severity = "info"
    elif phase == "Executed":
        severity = "warning" if reason in _UNPLANNED and severity != "info" else "info"
    elif phase == "Failed" and severity != "info":
        severity = "critical"
    return reason, severity


def settled(reason: str, phase: str) -> str:
    """The reason of an event in ``phase``: the end of a maintenance or stall (ENDED_PHASES) has its own."""
    if phase == "Failed" and reason not in _FAILED_ENDS:
        return reason
    return ENDED.get(reason, reason) if phase in ENDED_PHASES else reason


def state_severity(state: str) -> str:
    """Severity of a lifecycle state change: a node going away is a warning, anything else information."""
    return "warning" if state.lower() in GOING_STATES else "info"


def health_reason(code: str, category: str, status: str) -> tuple[str, str]:
    """(reason, severity) of an AWS Health event; a closed event is information."""
    reason, severity = AWS_HEALTH.get(code) or ("HealthEvent", HEALTH_CATEGORY_SEVERITY.get(category, "info"))
    if status == "closed":
        severity = "info"
    return reason, severity
