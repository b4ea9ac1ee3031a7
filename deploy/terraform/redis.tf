# ElastiCache for Redis OSS: fan-out, the connection registry and room history. TLS in transit (rediss://), AUTH
# from Secrets Manager, encrypted at rest with the module's key, Multi-AZ with automatic failover.

resource "aws_elasticache_subnet_group" "redis" {
  name        = "${var.name}-redis"
  description = "Switchboard Redis"
  subnet_ids  = var.private_subnet_ids
  tags        = local.tags
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id = var.name
  description          = "Switchboard fan-out, registry and history"
  engine               = "redis"
  engine_version       = var.redis_engine_version
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
  auth_token                 = aws_secretsmanager_secret_version.redis_auth.secret_string
  snapshot_retention_limit   = var.redis_snapshot_retention_days
  subnet_group_name          = aws_elasticache_subnet_group.redis.name
  security_group_ids         = [aws_security_group.redis.id]
  tags                       = local.tags
}
