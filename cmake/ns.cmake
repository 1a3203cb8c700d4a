# Shared build rules: warning flags, sanitizer flags, test registration.

add_library(ns_warnings INTERFACE)
target_compile_options(ns_warnings INTERFACE
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
	-Wformat=2 -Wvla -Wno-format-nonliteral)

# Code that runs inside the target process (the agent and what it links) never gets
# sanitizers: the target is not built with ASan, and a preloaded ASan runtime would
# change what the target computes.
add_library(ns_nosan INTERFACE)
target_link_libraries(ns_nosan INTERFACE ns_warnings)

add_library(ns_san INTERFACE)
target_link_libraries(ns_san INTERFACE ns_warnings)
if(NS_SANITIZE)
	target_compile_options(ns_san INTERFACE -fsanitize=address,undefined
		-fno-sanitize-recover=undefined -fno-omit-frame-pointer)
	target_link_options(ns_san INTERFACE -fsanitize=address,undefined)
endif()

# ns_module(NAME SOURCES... [AGENT]): a static library ns_NAME for the host tools
# and, with AGENT, a second one ns_NAME_agent built without sanitizers for
# libnonstop-agent.so.
function(ns_module name)
	cmake_parse_arguments(M "AGENT" "" "SOURCES;PUBLIC_LIBS;PRIVATE_LIBS" ${ARGN})
	add_library(ns_${name} STATIC ${M_SOURCES})
	target_include_directories(ns_${name} PUBLIC ${PROJECT_SOURCE_DIR}/core ${PROJECT_SOURCE_DIR})
	target_link_libraries(ns_${name} PUBLIC ${M_PUBLIC_LIBS} ns_san PRIVATE ${M_PRIVATE_LIBS})
	if(M_AGENT)
		set(agent_pub)
		foreach(l ${M_PUBLIC_LIBS})
			if(l MATCHES "^ns_")
				list(APPEND agent_pub ${l}_agent)
			else()
				list(APPEND agent_pub ${l})
			endif()
		endforeach()
		add_library(ns_${name}_agent STATIC ${M_SOURCES})
		target_include_directories(ns_${name}_agent PUBLIC ${PROJECT_SOURCE_DIR}/core ${PROJECT_SOURCE_DIR})
		target_compile_options(ns_${name}_agent PRIVATE -fvisibility=hidden)
		target_link_libraries(ns_${name}_agent PUBLIC ${agent_pub} ns_nosan PRIVATE ${M_PRIVATE_LIBS})
	endif()
endfunction()

# ns_add_tests(MODULE test1.c test2.c ...): each file is one ctest executable.
function(ns_add_tests module)
	foreach(src ${ARGN})
		get_filename_component(t ${src} NAME_WE)
		add_executable(${t} ${src})
		target_link_libraries(${t} PRIVATE ${module} ns_test)
		add_test(NAME ${t} COMMAND ${t})
		set_tests_properties(${t} PROPERTIES TIMEOUT 300
			ENVIRONMENT "NS_TEST_TARGETS=${PROJECT_BINARY_DIR}/tests/targets;NS_SOURCE_DIR=${PROJECT_SOURCE_DIR};NS_BINARY_DIR=${PROJECT_BINARY_DIR}")
	endforeach()
endfunction()
