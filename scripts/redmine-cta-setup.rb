# Copied from /work/shared/redmine-cta-setup.rb (the project's verified recipe, ../shared/redmine-local.md)
# and used by scripts/redmine-test-server.py to build its template database.  Adapted: parent tasks keep
# their own dates, priority and done ratio (CTA's #8546 has dates while its subtasks have none).
# Make a fresh Debian Redmine look like CTA's: REST on, an "Assigned" status, a "Task" tracker,
# a permissive workflow (including the initial status of a new issue), an "Interface code"
# custom field, a public project "cta-data" with a wiki and the calibration categories.
# Run as:  cd /usr/share/redmine && su www-data -s /bin/sh -c \
#   "BUNDLER_VERSION=2.3.15 REDMINE_INSTANCE=<instance> bundle exec rails runner -e production <this file>"
# Prints the admin API key and the ids a client needs. Safe to run twice.
Setting.rest_api_enabled = '1'
Setting.parent_issue_dates = 'independent'
Setting.parent_issue_priority = 'independent'
Setting.parent_issue_done_ratio = 'independent'
Setting.default_issue_start_date_to_creation_date = '0'
assigned = IssueStatus.find_or_create_by!(name: 'Assigned') { |s| s.is_closed = false }
new_status = IssueStatus.find_by!(name: 'New')
task = Tracker.find_by(name: 'Task') ||
       Tracker.create!(name: 'Task', default_status: new_status, core_fields: Tracker::CORE_FIELDS)
statuses = IssueStatus.all.to_a
Role.all.each do |role|
  Tracker.all.each do |tracker|
    statuses.each do |to|
      # old_status_id 0 = "new issue": without it a status given at creation is silently dropped
      WorkflowTransition.find_or_create_by!(role_id: role.id, tracker_id: tracker.id, old_status_id: 0, new_status_id: to.id)
      statuses.each do |from|
        next if from == to
        WorkflowTransition.find_or_create_by!(role_id: role.id, tracker_id: tracker.id, old_status_id: from.id, new_status_id: to.id)
      end
    end
  end
end
cf = IssueCustomField.find_by(name: 'Interface code') ||
     IssueCustomField.create!(name: 'Interface code', field_format: 'string', is_for_all: true,
                              is_filter: true, searchable: true, trackers: Tracker.all.to_a)
project = Project.find_by(identifier: 'cta-data') ||
          Project.create!(name: 'CTA DATA', identifier: 'cta-data', is_public: true,
                          trackers: Tracker.all.to_a, issue_custom_fields: [cf])
project.enabled_module_names = project.enabled_module_names | ['issue_tracking', 'wiki']
project.save!
Wiki.create!(project: project, start_page: 'Wiki') unless project.wiki
['Atmosphere Calibration', 'Array Calibration', 'Camera Calibration', 'Pointing Calibration'].each do |name|
  IssueCategory.find_or_create_by!(project: project, name: name)
end
puts "api_key=#{User.find_by_login('admin').api_key} project=cta-data tracker_task=#{task.id} " \
     "status_assigned=#{assigned.id} custom_field_interface_code=#{cf.id}"
