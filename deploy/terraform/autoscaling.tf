# Target tracking on CPU and on open WebSockets per task. Every task prints ActiveConnections each minute as a
# CloudWatch embedded-metric log line (namespace Switchboard, dimension ServiceName = var.name); CloudWatch Logs
# turns it into a metric, whose average over the tasks is the number per task. No agent, no metric filter.

resource "aws_appautoscaling_target" "switchboard" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.switchboard.name}/${aws_ecs_service.switchboard.name}"
  min_capacity       = var.min_tasks
  max_capacity       = var.max_tasks
  tags               = local.tags

  lifecycle {
    precondition {
      condition     = var.min_tasks <= var.max_tasks
      error_message = "min_tasks must not exceed max_tasks."
    }
  }
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.switchboard.service_namespace
  scalable_dimension = aws_appautoscaling_target.switchboard.scalable_dimension
  resource_id        = aws_appautoscaling_target.switchboard.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.target_cpu_percent
    scale_in_cooldown  = local.scale_in_cooldown
    scale_out_cooldown = local.scale_out_cooldown

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "connections" {
  name               = "${var.name}-connections"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.switchboard.service_namespace
  scalable_dimension = aws_appautoscaling_target.switchboard.scalable_dimension
  resource_id        = aws_appautoscaling_target.switchboard.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.target_connections_per_task
    scale_in_cooldown  = local.scale_in_cooldown
    scale_out_cooldown = local.scale_out_cooldown

    customized_metric_specification {
      namespace   = local.emf_namespace
      metric_name = local.emf_metric
      statistic   = "Average"
      unit        = "Count"

      metric_dimension {
        name  = local.emf_dimension
        value = local.emf_service
      }
    }
  }
}
