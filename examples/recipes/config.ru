# A Rack application for Puma; each generation names itself in X-Version.
gen = ENV.fetch("HOTSWAP_GENERATION", "?")
run lambda { |_env| [200, { "Content-Type" => "text/plain", "X-Version" => "gen #{gen}" }, ["ok\n"]] }
