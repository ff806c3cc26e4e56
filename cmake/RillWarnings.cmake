# Warning flags for rill's own targets (never forced on users).
function(rill_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor)
  if(RILL_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
