# Inputs of the Switchboard module. Defaults match deploy/aws/switchboard-{alb,nlb}.yaml (tests/blackbox/
# test_terraform.py asserts it), so a stack and a module deploy the same thing.

variable "name" {
  description = "Prefix of every resource name, and the ECS service's name (also the ServiceName of the ActiveConnections metric)."
  type        = string
  default     = "switchboard"

  validation {
    # ElastiCache replication group ids: lowercase, a letter first, no "--", no trailing "-"; load balancer and
    # target group names (32 characters) take a suffix of up to 9.
    condition     = can(regex("^[a-z][a-z0-9-]{0,21}$", var.name)) && !can(regex("--|-$", var.name))
    error_message = "name: 1 to 22 lowercase letters, digits and single hyphens, starting with a letter, not ending with a hyphen."
  }
}

variable "vpc_id" {
  description = "VPC of the load balancers, the tasks and Redis."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC id (vpc-...)."
  }
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing load balancer, in two or more Availability Zones."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2 && alltrue([for id in var.public_subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "public_subnet_ids: two or more subnet ids (subnet-...), one per Availability Zone."
  }
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks, Redis and the internal management load balancer (with a NAT gateway or VPC endpoints for ECR, CloudWatch Logs and Secrets Manager)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2 && alltrue([for id in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "private_subnet_ids: two or more subnet ids (subnet-...); Redis Multi-AZ needs two Availability Zones."
  }
}

variable "certificate_arn" {
  description = "ACM certificate of the public HTTPS/WSS (ALB) or TLS (NLB) listener."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)."
  }
}

variable "image" {
  description = "Switchboard container image, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/switchboard:1.0.0 (built from the repository's Dockerfile)."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must name a container image."
  }
}

variable "load_balancer_type" {
  description = "\"application\" (ALB: HTTPS listener, the seed 000 shape) or \"network\" (NLB: TLS listener, client IPs preserved, the seed 003 shape)."
  type        = string
  default     = "application"

  validation {
    condition     = contains(["application", "network"], var.load_balancer_type)
    error_message = "load_balancer_type must be \"application\" or \"network\"."
  }
}

variable "client_cidr_blocks" {
  description = "Who may connect to the public listener (port 443)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.client_cidr_blocks) > 0 && alltrue([for cidr in var.client_cidr_blocks : can(cidrnetmask(cidr))])
    error_message = "client_cidr_blocks: one or more IPv4 CIDR blocks."
  }
}

variable "idle_timeout_seconds" {
  description = "ALB idle timeout. Switchboard pings every 25 s, so any value above that keeps connections open; a long one spares clients that pause their own traffic. (An NLB keeps its 350 s TCP idle timeout, which the pings also keep alive.)"
  type        = number
  default     = 3600

  validation {
    condition     = var.idle_timeout_seconds >= 60 && var.idle_timeout_seconds <= 4000
    error_message = "idle_timeout_seconds must be between 60 and 4000 (the ALB's limit); below 60 gains nothing over the 25 s pings."
  }
}

variable "task_cpu" {
  description = "Fargate task CPU units."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.task_cpu)
    error_message = "task_cpu must be a Fargate size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "task_memory" {
  description = "Fargate task memory (MiB); it must be a combination Fargate accepts with task_cpu."
  type        = number
  default     = 2048

  validation {
    condition     = var.task_memory >= 512 && var.task_memory <= 122880 && var.task_memory % 512 == 0
    error_message = "task_memory must be 512 to 122880 MiB, in steps of 512."
  }
}

variable "desired_count" {
  description = "Tasks at the first deployment (autoscaling owns the number afterwards)."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_count >= 1
    error_message = "desired_count must be at least 1."
  }
}

variable "min_tasks" {
  description = "Autoscaling minimum."
  type        = number
  default     = 2

  validation {
    condition     = var.min_tasks >= 1
    error_message = "min_tasks must be at least 1."
  }
}

variable "max_tasks" {
  description = "Autoscaling maximum (at least min_tasks)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_tasks >= 1
    error_message = "max_tasks must be at least 1."
  }
}

variable "target_cpu_percent" {
  description = "Scale on average CPU of the service's tasks."
  type        = number
  default     = 60

  validation {
    condition     = var.target_cpu_percent > 0 && var.target_cpu_percent <= 100
    error_message = "target_cpu_percent must be in (0, 100]."
  }
}

variable "target_connections_per_task" {
  description = "Scale out when the average number of open WebSockets per task passes this (the ActiveConnections metric every task prints)."
  type        = number
  default     = 5000

  validation {
    condition     = var.target_connections_per_task >= 1
    error_message = "target_connections_per_task must be at least 1."
  }
}

variable "drain_delay" {
  description = "drain.delay: after SIGTERM, /health answers 503 this long before clients are closed with 1001, so the load balancer stops sending new ones. drain_delay + drain_grace_period must stay under the 30 s stop timeout."
  type        = number
  default     = 10

  validation {
    condition     = var.drain_delay >= 0 && var.drain_delay <= 25
    error_message = "drain_delay must be 0 to 25 seconds."
  }
}

variable "drain_grace_period" {
  description = "drain.grace_period: how long a stopping task waits at most for every $disconnect (seconds)."
  type        = number
  default     = 15

  validation {
    condition     = var.drain_grace_period >= 1 && var.drain_grace_period <= 29
    error_message = "drain_grace_period must be 1 to 29 seconds."
  }
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of the tasks' log group."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653)."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type of the replication group (not used by redis_serverless or redis_url)."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "redis_node_type must be an ElastiCache node type (cache.FAMILY.SIZE)."
  }
}

variable "redis_engine_version" {
  description = "Redis OSS engine version of the replication group: 7.x (the default parameter group family is redis7; redis.mode cluster uses sharded pub/sub, which needs 7)."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^7\\.[0-9]+$", var.redis_engine_version))
    error_message = "redis_engine_version must be 7.x."
  }
}

variable "redis_cluster_mode" {
  description = "Create a cluster-mode ElastiCache replication group (redis_shards shards, each with redis_replicas_per_shard replicas) instead of one primary: the tasks get its configuration endpoint (rediss://) and redis.mode cluster, so room channels are sharded pub/sub spread over the shards. Not with redis_serverless or redis_url."
  type        = bool
  default     = false
}

variable "redis_serverless" {
  description = "Create an ElastiCache Serverless cache (redis_serverless_engine) instead of a replication group: no node type or shards to choose; cluster protocol and TLS only, so the tasks get its endpoint (rediss://) and redis.mode cluster. Access is a user group whose \"default\" user has the Redis secret as password. Not with redis_cluster_mode or redis_url."
  type        = bool
  default     = false
}

variable "redis_serverless_engine" {
  description = "Engine of the Serverless cache when redis_serverless is true: \"valkey\" (its newest major version; every one has sharded pub/sub) or \"redis\" (Redis OSS 7)."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["valkey", "redis"], var.redis_serverless_engine)
    error_message = "redis_serverless_engine must be \"valkey\" or \"redis\"."
  }
}

variable "redis_url" {
  description = "An existing Redis, Valkey or ElastiCache (node-based or Serverless) to use instead of creating one: redis://HOST:PORT or rediss://HOST:PORT (TLS; ElastiCache Serverless and cluster configuration endpoints). Nothing Redis is created, no security group either: allow the tasks (task_security_group_id) to reach it, and give its password as secrets = { SWITCHBOARD_REDIS_PASSWORD = ARN }. null: the module creates one."
  type        = string
  default     = null

  validation {
    condition     = var.redis_url == null ? true : can(regex("^rediss?://[^\\s]+$", var.redis_url))
    error_message = "redis_url must be null or a redis:// or rediss:// URL."
  }
}

variable "redis_mode" {
  description = "redis.mode for redis_url: \"standalone\" (one primary), \"cluster\" (a Redis Cluster: one seed node or the configuration endpoint; ElastiCache Serverless is one) or \"auto\" (the gateway asks the server). null with redis_url: standalone. Only with redis_url: for the caches the module creates it is set to match them."
  type        = string
  default     = null

  validation {
    condition     = var.redis_mode == null ? true : contains(["standalone", "cluster", "auto"], var.redis_mode)
    error_message = "redis_mode must be null, \"standalone\", \"cluster\" or \"auto\"."
  }
}

variable "redis_shards" {
  description = "Shards (node groups) when redis_cluster_mode is true: each is a primary holding part of the keys and of the sharded room channels."
  type        = number
  default     = 3

  validation {
    condition     = var.redis_shards >= 1 && var.redis_shards <= 500
    error_message = "redis_shards must be 1 to 500."
  }
}

variable "redis_replicas_per_shard" {
  description = "Replicas of each primary (of the one primary when redis_cluster_mode is false). At least 1: Multi-AZ failover needs a replica. (Serverless replicates by itself.)"
  type        = number
  default     = 1

  validation {
    condition     = var.redis_replicas_per_shard >= 1 && var.redis_replicas_per_shard <= 5
    error_message = "redis_replicas_per_shard must be 1 to 5 (automatic failover needs at least one replica)."
  }
}

variable "redis_snapshot_retention_days" {
  description = "Daily Redis snapshots kept, replication group or Serverless cache (room history survives a lost cache); 0 turns them off."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_snapshot_retention_days >= 0 && var.redis_snapshot_retention_days <= 35
    error_message = "redis_snapshot_retention_days must be 0 to 35."
  }
}

variable "management_port" {
  description = "management.port: the management API (@connections, /metrics, the dashboard) listens here, never on the public port; only the internal load balancer reaches it."
  type        = number
  default     = 9090

  validation {
    condition     = var.management_port >= 1024 && var.management_port <= 65535 && var.management_port != 8080
    error_message = "management_port must be 1024 to 65535 and not 8080 (the WebSocket port)."
  }
}

variable "management_cidr_blocks" {
  description = "Who may call the management API through the internal load balancer. null: the VPC's own CIDR block."
  type        = list(string)
  default     = null

  validation {
    condition     = var.management_cidr_blocks == null ? true : alltrue([for cidr in var.management_cidr_blocks : can(cidrnetmask(cidr)) && cidr != "0.0.0.0/0"])
    error_message = "management_cidr_blocks: IPv4 CIDR blocks, and not 0.0.0.0/0 (the management API can post to every connection)."
  }
}

variable "management_security_group_ids" {
  description = "Security groups (your backends, Lambda functions) that may call the management API, in addition to management_cidr_blocks."
  type        = list(string)
  default     = []
}

variable "management_certificate_arn" {
  description = "ACM certificate for a TLS management listener (use it with a private DNS name it covers). null: plain TCP inside the VPC; prefer management.access_keys (SigV4, nothing replayable on the wire) then."
  type        = string
  default     = null

  validation {
    condition     = var.management_certificate_arn == null ? true : can(regex("^arn:aws[a-z-]*:acm:", var.management_certificate_arn))
    error_message = "management_certificate_arn must be null or an ACM certificate ARN."
  }
}

variable "environment" {
  description = "More SWITCHBOARD_* settings for the container (e.g. SWITCHBOARD_INTEGRATIONS); see `switchboard serve --help`. The module's own (Redis, drain, EMF, management port) cannot be overridden."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.environment) : can(regex("^SWITCHBOARD_[A-Z0-9_]+$", key))])
    error_message = "environment keys must be SWITCHBOARD_* variables."
  }
}

variable "secrets" {
  description = "More SWITCHBOARD_* settings read from Secrets Manager or SSM Parameter Store: variable name => secret or parameter ARN. The execution role may read exactly these."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key, arn in var.secrets : can(regex("^SWITCHBOARD_[A-Z0-9_]+$", key)) && can(regex("^arn:aws[a-z-]*:(secretsmanager|ssm):", arn))])
    error_message = "secrets: SWITCHBOARD_* names mapped to Secrets Manager or SSM parameter ARNs."
  }
}

variable "access_logs_bucket" {
  description = "S3 bucket for the public load balancer's access logs (its bucket policy must let the ELB service write). null: none; the tasks log every connection to CloudWatch Logs."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Protect the load balancers from deletion (turn off before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags on every resource that takes them."
  type        = map(string)
  default     = {}
}
