# Redis for fan-out, the connection registry and room history. One of four, picked by the inputs:
#
#   standalone (default)      ElastiCache replication group, cluster mode off: a primary and its replicas
#   redis_cluster_mode = true ElastiCache replication group, cluster mode on: redis_shards primaries with replicas;
#                             the tasks get its configuration endpoint and redis.mode cluster
#   redis_serverless = true   ElastiCache Serverless (Valkey or Redis OSS 7): cluster protocol, TLS only; the tasks
#                             get its endpoint and redis.mode cluster
#   redis_url = "rediss://…"  a cache you already run: nothing is created, the tasks get that URL and redis_mode
#
# What the module creates is TLS in transit (rediss://), encrypted at rest with the module's key, Multi-AZ, and
# protected by the secret from Secrets Manager: the AUTH token of a replication group, or the password of the
# "default" user of the Serverless cache's user group (Serverless controls access with users and user groups only).

locals {
  redis_kind = (
    var.redis_url != null ? "external" :
    var.redis_serverless ? "serverless" :
    var.redis_cluster_mode ? "cluster" :
    "standalone"
  )

  create_redis             = local.redis_kind != "external"
  create_replication_group = local.redis_kind == "standalone" || local.redis_kind == "cluster"
  create_serverless        = local.redis_kind == "serverless"

  # The cluster kinds need redis.mode cluster: keys hash-tagged per room, sharded pub/sub (Redis 7+ / Valkey 7+).
  redis_mode = (
    local.redis_kind == "external" ? coalesce(var.redis_mode, "standalone") :
    local.redis_kind == "standalone" ? "standalone" :
    "cluster"
  )

  # Serverless: its one endpoint (6379; the 6380 read-from-replica port is not used). Cluster: the configuration
  # endpoint. Standalone: the primary endpoint. External: none (the URL is given).
  redis_endpoint = (
    local.redis_kind == "serverless" ? one(aws_elasticache_serverless_cache.redis[*].endpoint[0].address) :
    local.redis_kind == "cluster" ? one(aws_elasticache_replication_group.redis[*].configuration_endpoint_address) :
    one(aws_elasticache_replication_group.redis[*].primary_endpoint_address)
  )

  redis_url = local.redis_kind == "external" ? var.redis_url : "rediss://${local.redis_endpoint}:${local.redis_port}"
}

# Before redis_serverless and redis_url, these resources had no count: keep the existing ones.
moved {
  from = aws_elasticache_subnet_group.redis
  to   = aws_elasticache_subnet_group.redis[0]
}

moved {
  from = aws_elasticache_replication_group.redis
  to   = aws_elasticache_replication_group.redis[0]
}

resource "aws_elasticache_subnet_group" "redis" {
  count       = local.create_replication_group ? 1 : 0
  name        = "${var.name}-redis"
  description = "Switchboard Redis"
  subnet_ids  = var.private_subnet_ids
  tags        = local.tags
}

resource "aws_elasticache_replication_group" "redis" {
  count                = local.create_replication_group ? 1 : 0
  replication_group_id = var.name
  description          = "Switchboard fan-out, registry and history"
  engine               = "redis"
  engine_version       = var.redis_engine_version # 7.x: sharded pub/sub (SPUBLISH/SSUBSCRIBE) needs 7
  node_type            = var.redis_node_type
  port                 = local.redis_port
  parameter_group_name = var.redis_cluster_mode ? "default.redis7.cluster.on" : "default.redis7"

  # Cluster mode off: one primary and its replicas. On: redis_shards primaries, each with its replicas.
  num_cache_clusters      = var.redis_cluster_mode ? null : var.redis_replicas_per_shard + 1
  num_node_groups         = var.redis_cluster_mode ? var.redis_shards : null
  replicas_per_node_group = var.redis_cluster_mode ? var.redis_replicas_per_shard : null

  automatic_failover_enabled = true
  multi_az_enabled           = true
  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.switchboard.arn
  auth_token                 = aws_secretsmanager_secret_version.redis_auth[0].secret_string
  snapshot_retention_limit   = var.redis_snapshot_retention_days
  subnet_group_name          = aws_elasticache_subnet_group.redis[0].name
  security_group_ids         = [aws_security_group.redis[0].id]
  tags                       = local.tags
}

# ElastiCache Serverless takes no AUTH token: access is a user group. Its user named "default" is the one a bare
# `AUTH <password>` (SWITCHBOARD_REDIS_PASSWORD) logs in as; it has every key, channel and command. The user and the
# group are engine "redis", which the ElastiCache docs ask for with Valkey caches too.
resource "aws_elasticache_user" "redis_default" {
  count         = local.create_serverless ? 1 : 0
  user_id       = "${var.name}-default"
  user_name     = "default"
  engine        = "redis"
  access_string = "on ~* &* +@all"
  tags          = local.tags

  authentication_mode {
    type      = "password"
    passwords = [aws_secretsmanager_secret_version.redis_auth[0].secret_string]
  }
}

resource "aws_elasticache_user_group" "redis" {
  count         = local.create_serverless ? 1 : 0
  user_group_id = var.name
  engine        = "redis"
  user_ids      = [aws_elasticache_user.redis_default[0].user_id]
  tags          = local.tags
}

resource "aws_elasticache_serverless_cache" "redis" {
  count       = local.create_serverless ? 1 : 0
  name        = var.name
  description = "Switchboard fan-out, registry and history"
  engine      = var.redis_serverless_engine
  # Redis OSS Serverless is 7 (sharded pub/sub needs 7); every Valkey major version (7.2 on) has it, the newest is taken.
  major_engine_version     = var.redis_serverless_engine == "redis" ? "7" : null
  kms_key_id               = aws_kms_key.switchboard.arn
  subnet_ids               = var.private_subnet_ids
  security_group_ids       = [aws_security_group.redis[0].id]
  user_group_id            = aws_elasticache_user_group.redis[0].user_group_id
  snapshot_retention_limit = var.redis_snapshot_retention_days
  tags                     = local.tags
}
