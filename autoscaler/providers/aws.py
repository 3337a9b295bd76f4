"""EC2 through boto3: run_instances (on-demand, or spot through InstanceMarketOptions), tags,
describe by the autoscaler's tag, terminate.

Every machine carries `shipyard:autoscaler=<name>` (how describe finds them), its label,
resource, queue and market, plus the resource's own tags; its volume is tagged alike. A
refused spot request (no capacity, price, quota) raises CapacityError, which the loop counts
toward the on-demand fallback; an interruption shows in describe as `preempted`.
"""
from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from autoscaler import userdata
from autoscaler.config import AutoscalerConfig
from autoscaler.model import Market
from autoscaler.provider import (
    PENDING,
    RUNNING,
    STOPPING,
    TERMINATED,
    CapacityError,
    CloudProvider,
    InstanceInfo,
    LaunchRequest,
    ProviderError,
)

CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded", "InsufficientFreeAddressesInSubnet", "InstanceLimitExceeded",
    "VcpuLimitExceeded", "Unsupported",
})
PREEMPTION_CODES = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})
_STATES = {"pending": PENDING, "running": RUNNING, "shutting-down": STOPPING, "stopping": STOPPING,
           "stopped": STOPPING, "terminated": TERMINATED}
DEVICE = "/dev/sda1"


class AwsProvider(CloudProvider):
    name = "aws"

    def __init__(self, autoscaler: str, client: Any):
        self.autoscaler = autoscaler
        self.ec2 = client

    @classmethod
    def from_config(cls, config: AutoscalerConfig) -> AwsProvider:
        aws = config.aws
        session = boto3.session.Session(profile_name=aws.profile or None)
        client = session.client("ec2", region_name=aws.region or None, endpoint_url=aws.endpoint_url or None)
        return cls(config.name, client)

    def launch(self, request: LaunchRequest) -> InstanceInfo:
        try:
            reply = self.ec2.run_instances(**self.run_arguments(request))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            if code in CAPACITY_CODES:
                raise CapacityError(f"{request.resource.instance_type} {request.market.value}: {code}: {message}") \
                    from None
            raise ProviderError(f"run_instances failed: {code}: {message}") from None
        except BotoCoreError as exc:
            raise ProviderError(f"run_instances failed: {exc}") from None
        return self._info(reply["Instances"][0])

    def run_arguments(self, request: LaunchRequest) -> dict[str, Any]:
        resource = request.resource
        tags = [{"Key": str(k), "Value": str(v)}
                for k, v in {**resource.tags, "Name": request.label, **request.tags}.items()]
        args: dict[str, Any] = {
            "ImageId": resource.image_id, "InstanceType": resource.instance_type, "MinCount": 1, "MaxCount": 1,
            "UserData": userdata.render(request.bootstrap, autoscaler=self.autoscaler),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
            "BlockDeviceMappings": [{"DeviceName": DEVICE, "Ebs": {
                "VolumeSize": resource.disk_gb, "VolumeType": "gp3", "DeleteOnTermination": True}}],
        }
        if resource.subnet_id:
            args["SubnetId"] = resource.subnet_id
        elif resource.zone:
            args["Placement"] = {"AvailabilityZone": resource.zone}
        if resource.security_group_ids:
            args["SecurityGroupIds"] = list(resource.security_group_ids)
        if resource.key_name:
            args["KeyName"] = resource.key_name
        if resource.iam_instance_profile:
            key = "Arn" if resource.iam_instance_profile.startswith("arn:") else "Name"
            args["IamInstanceProfile"] = {key: resource.iam_instance_profile}
        if request.market is Market.SPOT:
            args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        return args

    def describe(self) -> dict[str, InstanceInfo]:
        filters = [{"Name": "tag:shipyard:autoscaler", "Values": [self.autoscaler]}]
        out: dict[str, InstanceInfo] = {}
        try:
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        out[instance["InstanceId"]] = self._info(instance)
        except (ClientError, BotoCoreError) as exc:
            raise ProviderError(f"describe_instances failed: {exc}") from None
        return out

    def terminate(self, instance_id: str) -> None:
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
                return
            raise ProviderError(f"terminate_instances {instance_id} failed: {exc}") from None
        except BotoCoreError as exc:
            raise ProviderError(f"terminate_instances {instance_id} failed: {exc}") from None

    def close(self) -> None:
        self.ec2.close()

    @staticmethod
    def _info(instance: dict) -> InstanceInfo:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}
        reason = (instance.get("StateReason") or {}).get("Code", "")
        market = Market.SPOT if instance.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND
        return InstanceInfo(instance["InstanceId"], tags.get("shipyard:label", ""),
                            _STATES.get(instance["State"]["Name"], PENDING), market,
                            preempted=reason in PREEMPTION_CODES, reason=reason)
