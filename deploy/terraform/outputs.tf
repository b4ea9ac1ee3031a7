output "websocket_url" {
  description = "Clients connect here (any first path segment is the stage; point a DNS name covered by the certificate at load_balancer_dns_name)."
  value       = "wss://${aws_lb.public.dns_name}/prod"
}

output "management_endpoint" {
  description = "endpoint_url for boto3's apigatewaymanagementapi client, from inside the VPC (bearer token in management_token_secret_arn)."
  value       = "${var.management_certificate_arn == null ? "http" : "https"}://${aws_lb.management.dns_name}:${var.management_port}/prod"
}

output "management_token_secret_arn" {
  description = "Secrets Manager secret holding the management API's bearer token."
  value       = aws_secretsmanager_secret.management_token.arn
}

output "redis_auth_secret_arn" {
  description = "Secrets Manager secret holding the Redis AUTH token (Serverless: the default user's password); null with redis_url."
  value       = one(aws_secretsmanager_secret.redis_auth[*].arn)
}

output "load_balancer_arn" {
  description = "ARN of the public load balancer."
  value       = aws_lb.public.arn
}

output "load_balancer_dns_name" {
  description = "DNS name of the public load balancer (CNAME or alias target)."
  value       = aws_lb.public.dns_name
}

output "load_balancer_zone_id" {
  description = "Hosted zone of the public load balancer, for a Route 53 alias record."
  value       = aws_lb.public.zone_id
}

output "target_group_arn" {
  description = "ARN of the public target group (WebSocket port)."
  value       = aws_lb_target_group.public.arn
}

output "management_load_balancer_dns_name" {
  description = "DNS name of the internal management load balancer."
  value       = aws_lb.management.dns_name
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.switchboard.name
}

output "service_name" {
  description = "ECS service name (also the ServiceName dimension of the ActiveConnections metric)."
  value       = aws_ecs_service.switchboard.name
}

output "task_security_group_id" {
  description = "Security group of the tasks: add egress rules here for integrations on ports other than 443."
  value       = aws_security_group.tasks.id
}

output "load_balancer_security_group_id" {
  description = "Security group of the public load balancer."
  value       = aws_security_group.load_balancer.id
}

output "management_security_group_id" {
  description = "Security group of the internal management load balancer."
  value       = aws_security_group.management.id
}

output "redis_endpoint" {
  description = "Endpoint of the Redis the module created, TLS on port 6379: the primary endpoint (standalone), the configuration endpoint (redis_cluster_mode) or the Serverless cache's endpoint; null with redis_url."
  value       = local.redis_endpoint
}

output "redis_mode" {
  description = "redis.mode the tasks run with (SWITCHBOARD_REDIS_MODE): standalone, or cluster for redis_cluster_mode and redis_serverless."
  value       = local.redis_mode
}

output "log_group_name" {
  description = "CloudWatch Logs group of the tasks (their logs and the embedded-metric lines)."
  value       = aws_cloudwatch_log_group.switchboard.name
}

output "kms_key_arn" {
  description = "Customer-managed KMS key of the logs, the secrets and Redis at rest."
  value       = aws_kms_key.switchboard.arn
}
